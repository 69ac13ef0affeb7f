"""An IPMI BMC on loopback: pyghmi's own BMC server (pyghmi.ipmi.bmc.Bmc) with real RMCP+ auth.

Like a real BMC it keeps each session's privilege level (the one the client asked for in RAKP 1
and Set Session Privilege Level), answers Get Session Info with it, and refuses the commands the
IPMI 2.0 spec (appendix G) reserves for Operator, chassis control and set boot options, to a
User-level session with completion code D4h (insufficient privilege).

Run as a subprocess (`python -m testbed.ipmi`), because pyghmi's server and client
share process-wide session tables. Power and boot device are kept in memory, like a BMC's.

Get System GUID answers the machine's SMBIOS UUID in either byte order real BMCs use:
`smbios` (SMBIOS wire format, first three fields little-endian: what pyghmi's server sends)
or `ipmi` (IPMI 2.0's order, all 16 bytes least significant first); no `--guid`: the command
is refused (completion code C1h, "invalid command"), as on a BMC without it.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.processes import Process, free_port

_OPERATOR = 3
_OPERATOR_COMMANDS = {(0x00, 0x02), (0x00, 0x08)}  # (netfn, command): chassis control, set boot options
_GET_SESSION_INFO = (0x06, 0x3D)
_GET_SYSTEM_GUID = (0x06, 0x37)
GUID_ORDERS = ("smbios", "ipmi")


def serve_forever(bmc: Any, timeout: float = 30) -> None:
    """pyghmi's `Bmc.listen`, surviving the packets it cannot route: a retransmitted sessionless
    request that lands on a server session raises AttributeError (`sessionless_data` exists only on
    the server) and would end the whole BMC. Seen under load in the e2e; a real BMC drops such a
    packet and the client retransmits, which is what carrying on here does."""
    import traceback

    while True:
        try:
            bmc.listen(timeout=timeout)
        except AttributeError:
            traceback.print_exc()
            print("ipmi bmc: dropped a packet pyghmi could not route; still serving", flush=True)


def guid_bytes(system_uuid: str, order: str) -> bytes:
    """The 16 bytes a BMC sends for `system_uuid` in `order` (see the module docstring)."""
    value = uuid.UUID(system_uuid)
    return value.bytes_le if order == "smbios" else value.bytes[::-1]


def _serve(port: int, username: str, password: str, guid: str = "", guid_order: str = "smbios") -> None:
    from pyghmi.ipmi import bmc
    from pyghmi.ipmi import command as ipmicommand

    class EmulatedBmc(bmc.Bmc):  # type: ignore[misc]
        def handle_raw_request(self, request: dict[str, Any], session: Any) -> None:
            # The level the session holds: set by Set Session Privilege Level, else RAKP 1's.
            level = int(getattr(session, "clientpriv", getattr(session, "maxpriv", 4)))
            key = (request["netfn"], request["command"])
            if key == _GET_SESSION_INFO:  # handle, slots, active, user id, privilege, channel
                session.send_ipmi_response(data=[1, 1, 1, 1, level & 0x0F, 1])
            elif key == _GET_SYSTEM_GUID:
                if guid:
                    session.send_ipmi_response(data=list(guid_bytes(guid, guid_order)))
                else:
                    session.send_ipmi_response(code=0xC1)
            elif key in _OPERATOR_COMMANDS and level < _OPERATOR:
                session.send_ipmi_response(code=0xD4)
            else:
                super().handle_raw_request(request, session)

        def __init__(self) -> None:
            super().__init__({username: password}, port=port, address="127.0.0.1")
            self.powerstate = "off"
            self.bootdevice: str | int = "default"
            self.efi = False  # boot flags data 1, bit 5: "EFI boot" (IPMI 2.0, Boot Options parameter 5)

        def set_system_boot_options(self, request: dict[str, Any], session: Any) -> None:
            if request["data"][0] == 5 and len(request["data"]) > 1:
                self.efi = bool(request["data"][1] & 0x20)
            super().set_system_boot_options(request, session)

        def get_system_boot_options(self, request: dict[str, Any], session: Any) -> None:
            """pyghmi's answer (its device encoding kept as it is) plus the EFI bit it drops."""
            if request["data"][0] != 5:
                return super().get_system_boot_options(request, session)  # type: ignore[no-any-return]
            device = self.get_boot_device()
            code = device if isinstance(device, int) else ipmicommand.boot_devices.get(device, 0)
            flags = 0b10000000 | (0b100000 if self.efi else 0)
            session.send_ipmi_response(data=[1, 5, flags, code, 0, 0, 0])
            return None

        def get_boot_device(self) -> str | int:
            return self.bootdevice

        def set_boot_device(self, bootdevice: str | int) -> None:
            self.bootdevice = bootdevice

        def cold_reset(self) -> None:
            pass

        def get_power_state(self) -> str:
            return self.powerstate

        def power_off(self) -> None:
            self.powerstate = "off"

        def power_on(self) -> None:
            self.powerstate = "on"

        def power_reset(self) -> None:
            self.powerstate = "on"

        def power_cycle(self) -> None:
            self.powerstate = "on"

        def power_shutdown(self) -> None:
            self.powerstate = "off"

        def is_active(self) -> bool:
            return self.powerstate == "on"

    print(f"ipmi bmc listening on 127.0.0.1:{port}", flush=True)
    serve_forever(EmulatedBmc())


@dataclass
class IpmiBmc:
    process: Process
    port: int
    username: str
    password: str = field(repr=False)
    guid: str = ""

    @property
    def address(self) -> str:
        return f"ipmi://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.stop()


def start_ipmi_bmc(
    workdir: Path,
    username: str,
    password: str,
    port: int | None = None,
    guid: str = "",
    guid_order: str = "smbios",
) -> IpmiBmc:
    """Start the server; UDP has no handshake to wait for, so readiness is the printed line."""
    from testbed.processes import wait_for

    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    secret = workdir / "ipmi-password"
    secret.write_text(password)
    secret.chmod(0o600)
    log = workdir / f"ipmi-{port}.log"
    proc = Process(
        "ipmi bmc",
        [
            sys.executable,
            "-m",
            "testbed.ipmi",
            "--port",
            str(port),
            "--user",
            username,
            "--password-file",
            str(secret),
            *(["--guid", guid, "--guid-order", guid_order] if guid else []),
        ],
        log,
    )

    def ready() -> bool:
        proc.check_alive()
        return log.exists() and "listening" in log.read_text()

    wait_for(ready, 20, f"the IPMI BMC on 127.0.0.1:{port}")
    return IpmiBmc(proc, port, username, password, guid)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=623)
    p.add_argument("--user", default="admin")
    p.add_argument("--password-file", required=True)
    p.add_argument("--guid", default="", help="the system UUID Get System GUID answers")
    p.add_argument("--guid-order", choices=GUID_ORDERS, default="smbios")
    args = p.parse_args()
    _serve(args.port, args.user, Path(args.password_file).read_text().strip(), args.guid, args.guid_order)


if __name__ == "__main__":
    main()
