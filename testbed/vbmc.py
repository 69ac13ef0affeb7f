"""virtualbmc for one libvirt domain: the test bed's IPMI BMC.

    METALFLOW_VBMC_PASSWORD=... python -m testbed.vbmc DOMAIN USERNAME PORT LIBVIRT_URI

One process per domain, without vbmcd's config directory and ZeroMQ control socket; the
password comes from the environment, never the command line. A reset is a cold restart, as on
a physical server, whose firmware re-reads the boot order: libvirt's own reset would keep the
boot devices the domain started with and so ignore the boot device just set over IPMI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from testbed.processes import Process, free_port


def main(domain: str, username: str, port: int, uri: str) -> None:
    import libvirt
    from virtualbmc import utils
    from virtualbmc.vbmc import VirtualBMC

    class ColdResetBMC(VirtualBMC):  # type: ignore[misc]
        def power_reset(self) -> int | None:
            with utils.libvirt_open(**self._conn_args) as conn:
                dom = utils.get_libvirt_domain(conn, self.domain_name)
                try:
                    if dom.isActive():
                        dom.destroy()
                    dom.create()
                except libvirt.libvirtError:
                    return 0xC0  # node busy: the client retries
            return None

    bmc = ColdResetBMC(username, os.environ["METALFLOW_VBMC_PASSWORD"], port, "127.0.0.1", domain, uri)
    print(f"virtualbmc for {domain} on 127.0.0.1:{port}", flush=True)
    while True:
        try:
            bmc.listen(timeout=30)
        except AttributeError as err:
            # pyghmi 1.6.19's server loop hands a sessionless packet to a ServerSession, which has
            # no handler for it, and the whole BMC died mid-test (seen under load with several test
            # beds at once): drop that packet and keep serving, as a real BMC would
            print(f"virtualbmc for {domain}: dropped a packet pyghmi could not route ({err})", flush=True)


def start_vbmc(workdir: Path, domain: str, username: str, password: str, uri: str) -> tuple[Process, int]:
    port = free_port()
    proc = Process(
        f"virtualbmc {domain}",
        [sys.executable, "-m", "testbed.vbmc", domain, username, str(port), uri],
        workdir / f"vbmc-{domain}.log",
        env={"METALFLOW_VBMC_PASSWORD": password},
    )
    return proc, port


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
