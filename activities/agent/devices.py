"""Block devices as the agent sees them: from /sys/block on a real server, or file disks.

Facts come from sysfs alone (no udev database or lsblk needed), spelled as Ironic reports them
(its inventory takes them from lsblk, which takes them from udev): metal3 root device hints
written against an Ironic inventory then match here too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from activities.agent.config import AgentConfig
from metalflow.api.models import Storage

_SKIP_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd")
# nvme<subsys>c<ctrl>n<ns>: one controller's path to a multipath namespace; I/O goes to nvme<subsys>n<ns>.
_NVME_PATH = re.compile(r"nvme\d+c\d+n\d+")
_ATA_PORT = re.compile(r"ata\d+")

Bus = Literal["virtio", "sata", "sas", "nvme", "scsi", "file", "other"]


@dataclass(frozen=True)
class BlockDevice:
    name: str  # /dev/sda
    path: Path  # what to open for I/O
    size_bytes: int
    model: str = ""
    vendor: str = ""
    serial: str = ""
    wwn: str = ""
    wwn_vendor_extension: str = ""
    rotational: bool = False
    hctl: str = ""
    bus: Bus = "file"  # how the kernel sees it attached; the inventory's NVME type comes from here

    @property
    def wwn_with_extension(self) -> str:
        # udev's ID_WWN_WITH_EXTENSION: one "0x", then the WWN and its extension digits.
        return self.wwn + self.wwn_vendor_extension.removeprefix("0x")

    def to_storage(self) -> Storage:
        kind: Literal["HDD", "SSD", "NVME"] = (
            "HDD" if self.rotational else ("NVME" if self.bus == "nvme" else "SSD")
        )
        return Storage(
            name=self.name,
            rotational=self.rotational,
            type=kind,
            size_bytes=self.size_bytes,
            vendor=self.vendor,
            model=self.model,
            serial_number=self.serial,
            wwn=self.wwn,
            wwn_vendor_extension=self.wwn_vendor_extension,
            wwn_with_extension=self.wwn_with_extension,
            hctl=self.hctl,
        )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _vpd_serial(page: bytes) -> str:
    """The unit serial number from SCSI VPD page 0x80, which libata fills from ATA IDENTIFY.

    SATA and SAS disks have no sysfs `serial` file; the page is 4 header bytes (page code in
    byte 1, length in bytes 2-3), then the ASCII serial, often padded with spaces.
    """
    if len(page) < 4 or page[1] != 0x80:
        return ""
    length = int.from_bytes(page[2:4], "big")
    return page[4 : 4 + length].decode("ascii", "replace").strip(" \x00")


def _vpd_naa(page: bytes) -> str:
    """The logical unit's NAA name from SCSI VPD page 0x83, as hex; for kernels without `wwid`.

    Designators are 4 header bytes (association in bits 4-5 of byte 1, type in bits 0-3, length
    in byte 3) and the id; the longest NAA of the unit itself (not of a target port) wins, as in
    the kernel and udev's scsi_id.
    """
    best = b""
    pos, end = 4, min(len(page), 4 + int.from_bytes(page[2:4], "big"))
    while pos + 4 <= end:
        flags, size = page[pos + 1], page[pos + 3]
        ident = page[pos + 4 : pos + 4 + size]
        if flags & 0x30 == 0 and flags & 0x0F == 3 and len(ident) > len(best):
            best = ident
        pos += 4 + size
    return best.hex()


def _bus(dev: Path) -> Bus:
    """How the disk is attached, from the subsystem of its parent device and that device's path."""
    try:
        subsystem = os.path.basename(os.readlink(dev / "subsystem"))
    except OSError:
        return "other"
    if subsystem in ("nvme", "nvme-subsystem"):  # the controller, or the subsystem of a multipath head
        return "nvme"
    if subsystem == "virtio":
        return "virtio"
    if subsystem != "scsi":
        return "other"
    parts = dev.resolve().parts
    # libata names its vendor "ATA", also for a SATA disk behind a SAS HBA; AHCI ports are ataN.
    if _read(dev / "vendor") == "ATA" or any(_ATA_PORT.fullmatch(p) for p in parts):
        return "sata"
    if (dev / "sas_address").exists() or any(p.startswith("end_device-") for p in parts):
        return "sas"
    return "scsi"  # virtio-scsi, RAID controller volumes, iSCSI, USB


def _wwn(bus: Bus, disk: Path, dev: Path) -> tuple[str, str]:
    """(wwn, vendor extension) as udev names them and Ironic reports them.

    NVMe: the namespace's wwid verbatim ("eui.…", "nvme.…", "uuid.…"), as udev's ID_WWN.
    SCSI/SATA: an NAA name as "0x" + 16 hex digits; a 32-digit (registered extended) name puts
    its last 16 digits in the vendor extension, as udev's scsi_id does. Other wwid forms (t10.)
    are no WWN.
    """
    if bus == "nvme":
        return _read(disk / "wwid"), ""
    wwid = _read(dev / "wwid")
    naa = wwid.removeprefix("naa.") if wwid.startswith("naa.") else _vpd_naa(_read_bytes(dev / "vpd_pg83"))
    if not naa:
        return "", ""
    return "0x" + naa[:16], ("0x" + naa[16:]) if naa[16:] else ""


def _sys_devices(root: Path) -> list[BlockDevice]:
    devices = []
    sys_block = root / "sys" / "block"
    for entry in sorted(sys_block.iterdir()) if sys_block.exists() else []:
        if (
            entry.name.startswith(_SKIP_PREFIXES)
            or _read(entry / "removable") == "1"
            or _read(entry / "hidden") == "1"
            or _NVME_PATH.fullmatch(entry.name)
        ):
            continue
        sectors = int(_read(entry / "size") or 0)  # always 512-byte units, whatever the block size
        if sectors == 0:
            continue
        dev = entry / "device"
        bus = _bus(dev)
        scsi = dev / "scsi_device"
        hctl = next((p.name for p in scsi.iterdir()), "") if scsi.is_dir() else ""
        wwn, extension = _wwn(bus, entry, dev)
        devices.append(
            BlockDevice(
                name=f"/dev/{entry.name}",
                path=Path("/dev") / entry.name,
                size_bytes=sectors * 512,
                model=_read(dev / "model"),
                # virtio's device/vendor is the PCI vendor id (0x1af4), not a disk maker.
                vendor=_read(dev / "vendor") if bus in ("sata", "sas", "scsi") else "",
                # virtio-blk: the disk's serial; NVMe: the controller's; SCSI: VPD page 0x80.
                serial=_read(entry / "serial")
                or _read(dev / "serial")
                or _vpd_serial(_read_bytes(dev / "vpd_pg80")),
                wwn=wwn,
                wwn_vendor_extension=extension,
                rotational=_read(entry / "queue" / "rotational") == "1",
                hctl=hctl,
                bus=bus,
            )
        )
    return devices


def _file_devices(config: AgentConfig) -> list[BlockDevice]:
    devices = []
    for disk in config.disks or []:
        disk.path.parent.mkdir(parents=True, exist_ok=True)
        if not disk.path.exists() or disk.path.stat().st_size != disk.size_bytes:
            with disk.path.open("ab") as f:
                os.truncate(f.fileno(), disk.size_bytes)  # sparse
        devices.append(
            BlockDevice(
                name=disk.name,
                path=disk.path,
                size_bytes=disk.size_bytes,
                model=disk.model,
                vendor=disk.vendor,
                serial=disk.serial,
                wwn=disk.wwn,
                rotational=disk.rotational,
                hctl=disk.hctl,
            )
        )
    return devices


def list_devices(config: AgentConfig) -> list[BlockDevice]:
    return _file_devices(config) if config.disks is not None else _sys_devices(config.sys_root)
