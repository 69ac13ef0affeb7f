"""dnsmasq for the boot network: the base config and one dhcp-hostsdir entry per known MAC."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from activities.boot.render import render
from metalflow.api.boot import ARCHITECTURES
from metalflow.runtime.settings import Settings


@dataclass(frozen=True)
class BootNetwork:
    interface: str
    range_start: str
    range_end: str
    netmask: str = "255.255.255.0"
    lease_time: str = "10m"
    ipv6_prefix: str | None = "fd00:6d66::"  # RA-only, so iPXE stops waiting for IPv6
    ignore_unknown: bool = True
    disable_dns: bool = True
    tftp_root: Path = Path("/var/lib/metalflow/tftp")
    pid_file: Path | None = None
    lease_file: Path | None = None
    run_as: str | None = None  # dnsmasq's `user=`; it drops to nobody by default
    # Answer any iPXE client without a host entry with the generic by-UUID script (hosts
    # enrolled without a MAC, issue 21); unknown firmware is then sent an iPXE binary too.
    uuid_boot: bool = False


def hosts_dir(settings: Settings) -> Path:
    return settings.dnsmasq_hosts_dir or settings.boot_dir / "dnsmasq" / "hosts"


def base_config(net: BootNetwork, settings: Settings) -> str:
    return render(
        "dnsmasq.conf.j2",
        interface=net.interface,
        range_start=net.range_start,
        range_end=net.range_end,
        netmask=net.netmask,
        lease_time=net.lease_time,
        ipv6_prefix=net.ipv6_prefix,
        ignore_unknown=net.ignore_unknown and not net.uuid_boot,
        uuid_boot=net.uuid_boot,
        disable_dns=net.disable_dns,
        hosts_dir=hosts_dir(settings),
        boot_url=settings.boot_server_url.rstrip("/"),
        tftp_root=net.tftp_root,
        pid_file=net.pid_file,
        lease_file=net.lease_file,
        run_as=net.run_as,
        other_archs=[a for a in ARCHITECTURES.values() if a.name != "x86_64"],
        efi_ipxe=ARCHITECTURES["x86_64"].uefi_ipxe,
    )


def host_entry(mac: str, hostname: str, ip: str = "") -> str:
    """One host's DHCP entry: MAC, name, address, and no `set:` tag. dnsmasq tags a matching host
    `known` itself, and the iPXE binary follows the architecture and the PXE/HTTP vendor class
    the firmware reports (dnsmasq.conf.j2). A `set:` tag in a dhcp-hostsdir entry makes Debian's
    dnsmasq 2.89 segfault on the SIGHUP that `reload` sends once it has handed out leases
    (tests/test_boot.py::test_reload_after_leases_keeps_dnsmasq_serving_and_drops_removed_hosts)."""
    return render("dnsmasq-host.j2", mac=mac.lower(), hostname=hostname, ip=ip)


def reload(settings: Settings) -> bool:
    """SIGHUP dnsmasq so it re-reads host entries now; False when no dnsmasq is configured."""
    pid_file = settings.dnsmasq_pid_file
    if pid_file is None or not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
    except (ValueError, ProcessLookupError):
        return False
    return True
