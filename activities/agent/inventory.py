"""In-band inventory from the running system (/proc, /sys), in metal3's HardwareDetails shape."""

from __future__ import annotations

import platform
import socket
from pathlib import Path

from activities.agent.config import AgentConfig
from activities.agent.devices import list_devices
from metalflow.api.models import BIOS, CPU, NIC, Firmware, HardwareDetails, HardwareSystemVendor


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def cpu(root: Path) -> CPU:
    text = _read(root / "proc" / "cpuinfo")
    blocks = [b for b in text.split("\n\n") if b.strip()]
    fields: dict[str, str] = {}
    for line in blocks[0].splitlines() if blocks else []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return CPU(
        arch=platform.machine(),
        model=fields.get("model name", ""),
        clock_megahertz=float(fields.get("cpu MHz", "0") or 0),
        flags=sorted(set(fields.get("flags", "").split())),
        count=sum(1 for b in blocks if b.lstrip().startswith("processor")),
    )


def ram_mebibytes(root: Path) -> int:
    for line in _read(root / "proc" / "meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def nics(root: Path) -> list[NIC]:
    found = []
    net = root / "sys" / "class" / "net"
    for entry in sorted(net.iterdir()) if net.exists() else []:
        mac = _read(entry / "address")
        if entry.name == "lo" or not mac or mac == "00:00:00:00:00:00":
            continue
        speed = _read(entry / "speed")
        found.append(
            NIC(
                name=entry.name,
                mac=mac.lower(),
                speed_gbps=max(int(speed), 0) // 1000 if speed.lstrip("-").isdigit() else 0,
                model=_read(entry / "device" / "vendor") + " " + _read(entry / "device" / "device"),
            )
        )
    return found


def boot_mac(root: Path) -> str:
    """The MAC of the NIC the host network-booted from: the kernel's BOOTIF=01-aa-bb-cc-dd-ee-ff
    (pxelinux's convention, which metalflow's iPXE scripts follow); "" when absent."""
    for word in _read(root / "proc" / "cmdline").split():
        if word.startswith("BOOTIF="):
            digits = word.removeprefix("BOOTIF=").replace(":", "-").lower().split("-")
            if len(digits) == 7 and digits[0] == "01":  # ARP hardware type 1: Ethernet
                return ":".join(digits[1:])
    return ""


def mark_booted(found: list[NIC], mac: str) -> list[NIC]:
    """Set `pxe` on the NIC that booted (metal3's hardware.nics[].pxe), as Ironic's inspection does."""
    if not mac:
        return found
    return [nic.model_copy(update={"pxe": nic.pxe or nic.mac.lower() == mac}) for nic in found]


def collect(config: AgentConfig) -> HardwareDetails:
    root = config.sys_root
    dmi = root / "sys" / "class" / "dmi" / "id"
    return HardwareDetails(
        system_vendor=HardwareSystemVendor(
            manufacturer=_read(dmi / "sys_vendor"),
            product_name=_read(dmi / "product_name"),
            serial_number=_read(dmi / "product_serial"),
        ),
        firmware=Firmware(
            bios=BIOS(
                date=_read(dmi / "bios_date"),
                vendor=_read(dmi / "bios_vendor"),
                version=_read(dmi / "bios_version"),
            )
        ),
        ram_mebibytes=ram_mebibytes(root),
        nics=config.nics if config.nics is not None else mark_booted(nics(root), boot_mac(root)),
        storage=[d.to_storage() for d in list_devices(config)],
        cpu=cpu(root),
        hostname=socket.gethostname(),
    )
