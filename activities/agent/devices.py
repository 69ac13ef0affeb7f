"""Block devices as the agent sees them: from /sys/block on a real server, or file disks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from activities.agent.config import AgentConfig
from metalflow.api.models import Storage

_SKIP_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd")


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

    @property
    def wwn_with_extension(self) -> str:
        return self.wwn + self.wwn_vendor_extension

    def to_storage(self) -> Storage:
        kind: Literal["HDD", "SSD", "NVME"] = (
            "HDD" if self.rotational else ("NVME" if "nvme" in self.name else "SSD")
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
        return path.read_text().strip()
    except OSError:
        return ""


def _sys_devices(root: Path) -> list[BlockDevice]:
    devices = []
    sys_block = root / "sys" / "block"
    for entry in sorted(sys_block.iterdir()) if sys_block.exists() else []:
        if entry.name.startswith(_SKIP_PREFIXES) or _read(entry / "removable") == "1":
            continue
        sectors = int(_read(entry / "size") or 0)
        if sectors == 0:
            continue
        dev = entry / "device"
        hctl = ""
        scsi = dev / "scsi_device"
        if scsi.exists():
            hctl = next((p.name for p in scsi.iterdir()), "")
        wwid = _read(dev / "wwid") or _read(entry / "wwid")
        wwn = "0x" + wwid.split(".", 1)[1] if wwid.startswith(("naa.", "eui.")) else ""
        devices.append(
            BlockDevice(
                name=f"/dev/{entry.name}",
                path=Path("/dev") / entry.name,
                size_bytes=sectors * 512,
                model=_read(dev / "model"),
                vendor=_read(dev / "vendor"),
                serial=_read(dev / "serial") or _read(entry / "serial"),
                wwn=wwn,
                rotational=_read(entry / "queue" / "rotational") == "1",
                hctl=hctl,
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
