"""Software RAID (metal3's softwareRAIDVolumes), built by the agent with mdadm, as Ironic's agent does.

Every holder disk gets the same GPT: an EFI System Partition first (firmware cannot read an md
array, so the boot loader lives outside it, on every disk) and then one partition per volume;
volume i is an md array over partition i+2 of every holder. The image is written to the root
volume's array, and the ESP the image carries is copied to each holder's ESP, so the host boots
from any disk that survives.

The plan (holders, sizes, the root volume) is metalflow/api/software_raid.py's, made before a
byte is written; one that cannot work is a RAIDConfigurationError naming the field. Arrays
already assembled the way the spec asks are kept (a deploy after preparing reuses them); anything
else is stopped and its members' superblocks zeroed before the holders are partitioned again.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from activities.agent.configdrive import read_table
from activities.agent.devices import BlockDevice
from metalflow.api import software_raid
from metalflow.api.agent import SoftwareRAIDArray
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.metal3_fields import SoftwareRAIDVolume
from metalflow.api.software_raid import MIB, SoftwareRAIDPlan

ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
RAID_TYPE = "A19D880F-05FC-4D3B-A006-743F0F84911E"  # Linux RAID
MDADM_LEVEL = {"0": "0", "1": "1", "1+0": "10"}
PARTITION_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Layout:
    """The API's plan bound to this host's block devices."""

    holders: tuple[BlockDevice, ...]
    plan: SoftwareRAIDPlan

    def member(self, holder: BlockDevice, volume: int) -> str:
        return partition_path(holder.name, volume + 2)


def partition_path(disk: str, number: int) -> str:
    """The kernel's name for partition NUMBER of DISK: /dev/vda2, /dev/nvme0n1p2."""
    return f"{disk}p{number}" if disk[-1].isdigit() else f"{disk}{number}"


def _fail(message: str) -> Exception:
    return permanent(ErrorName.RAID_CONFIG, message)


def plan(devices: list[BlockDevice], volumes: list[SoftwareRAIDVolume]) -> Layout:
    """metalflow/api/software_raid.py's plan on these devices, or a RAIDConfigurationError."""
    try:
        planned = software_raid.plan([d.to_storage() for d in devices], volumes)
    except software_raid.SoftwareRAIDPlanError as err:
        raise _fail(str(err)) from None
    by_name = {d.name: d for d in devices}
    return Layout(tuple(by_name[h] for h in planned.holders), planned)


# ---- what the kernel has ----


def _sys(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def arrays(sys_root: Path = Path("/")) -> list[SoftwareRAIDArray]:
    """The md arrays the kernel runs (sysfs: level, members, size)."""
    found = []
    for md in sorted((sys_root / "sys" / "block").glob("md*")):
        level = _sys(md / "md" / "level")  # "raid1"; empty for an inactive array
        members = (
            sorted(f"/dev/{p.name}" for p in (md / "slaves").iterdir()) if (md / "slaves").is_dir() else []
        )
        metal3 = {"raid0": "0", "raid1": "1", "raid10": "1+0"}.get(level, level)
        found.append(
            SoftwareRAIDArray(
                device=f"/dev/{md.name}",
                level=metal3,
                members=members,
                size_bytes=int(_sys(md / "size") or 0) * 512,
            )
        )
    return found


def array_device(name: str, sys_root: Path = Path("/")) -> BlockDevice | None:
    """A running md array as a device the image and the config drive are written to."""
    entry = sys_root / "sys" / "block" / Path(name).name
    if not Path(name).name.startswith("md") or not entry.is_dir():
        return None
    return BlockDevice(
        name=name, path=Path(name), size_bytes=int(_sys(entry / "size") or 0) * 512, bus="other"
    )


def _run(argv: list[str], what: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise _fail(f"{what}: {' '.join(argv)} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout


def stop_all(sys_root: Path = Path("/")) -> list[str]:
    """Stop every md array and zero its members' superblocks: nothing of an old RAID survives to
    be assembled again (cleaning, and a rebuild, start here). Returns the members cleared."""
    cleared: list[str] = []
    for array in arrays(sys_root):
        _run(["mdadm", "--stop", array.device], f"stopping {array.device}")
        for member in array.members:
            _run(["mdadm", "--zero-superblock", member], f"clearing {member}")
            cleared.append(member)
    return cleared


def matching(layout: Layout, running: list[SoftwareRAIDArray]) -> list[SoftwareRAIDArray] | None:
    """The running arrays, in volume order, when they are exactly what LAYOUT asks for."""
    chosen = []
    for i, volume in enumerate(layout.plan.volumes):
        members = sorted(layout.member(h, i) for h in layout.holders)
        match = [a for a in running if a.members == members and a.level == volume.level]
        if not match:
            return None
        chosen.append(match[0])
    return chosen if len(running) == len(chosen) else None


def cleaned_parts(layout: Layout, sys_root: Path = Path("/")) -> list[BlockDevice]:
    """What cleaning wipes on a kept RAID: each array (the OS on it) and each holder's ESP."""
    parts = []
    for array in matching(layout, arrays(sys_root)) or []:
        device = array_device(array.device, sys_root)
        if device is not None:
            parts.append(device)
    for holder in layout.holders:
        esp = partition_path(holder.name, 1)
        sectors = int(_sys(sys_root / "sys" / "class" / "block" / Path(esp).name / "size") or 0)
        parts.append(BlockDevice(name=esp, path=Path(esp), size_bytes=sectors * 512, bus="other"))
    return parts


def _wait_partitions(layout: Layout) -> None:
    """The partition nodes mdadm opens exist once udev has seen the new tables."""
    subprocess.run(["udevadm", "settle", "--timeout=30"], capture_output=True)
    wanted = [layout.member(h, i) for h in layout.holders for i in range(len(layout.plan.volumes))]
    deadline = time.monotonic() + PARTITION_WAIT_SECONDS
    while not all(os.path.exists(p) for p in wanted):
        if time.monotonic() > deadline:
            missing = [p for p in wanted if not os.path.exists(p)]
            raise _fail(f"the kernel shows no {', '.join(missing)} after partitioning")
        time.sleep(0.2)  # the kernel's partition scan, not a test's synchronisation


def build(layout: Layout, sys_root: Path = Path("/")) -> list[SoftwareRAIDArray]:
    """Stop what runs, partition every holder alike, create one array per volume."""
    stop_all(sys_root)
    for holder in layout.holders:
        argv = ["sgdisk", "--zap-all", str(holder.path)]
        _run(argv, f"clearing {holder.name}")
        argv = [
            "sgdisk",
            f"--new=1:0:+{software_raid.ESP_BYTES // MIB}M",
            f"--typecode=1:{ESP_TYPE}",
            "--change-name=1:esp",
        ]
        for i, size in enumerate(layout.plan.sizes, start=2):
            end = f"+{size // MIB}M" if size else "0"
            argv += [f"--new={i}:0:{end}", f"--typecode={i}:{RAID_TYPE}", f"--change-name={i}:raid{i - 2}"]
        _run([*argv, str(holder.path)], f"partitioning {holder.name}")
    _wait_partitions(layout)
    for i, volume in enumerate(layout.plan.volumes):
        members = [layout.member(h, i) for h in layout.holders]
        for member in members:  # a previous tenant's signature would make mdadm ask
            _run(["wipefs", "--all", "--force", member], f"clearing {member}")
        _run(
            [
                "mdadm",
                "--create",
                f"/dev/md{i}",
                "--run",
                "--metadata=1.2",
                f"--level={MDADM_LEVEL[volume.level]}",
                f"--raid-devices={len(members)}",
                f"--name=metalflow{i}",
                "--homehost=any",
                *members,
            ],
            f"creating softwareRAIDVolumes[{i}]",
        )
    built = matching(layout, arrays(sys_root))
    if built is None:
        raise _fail(f"mdadm created the arrays but the kernel shows {arrays(sys_root)}")
    return built


def ensure(layout: Layout, sys_root: Path = Path("/")) -> tuple[list[SoftwareRAIDArray], bool]:
    """The arrays LAYOUT asks for: the running ones when they match, else built; (arrays, built)."""
    running = matching(layout, arrays(sys_root))
    if running is not None:
        return running, False
    return build(layout, sys_root), True


def install_esp(root: BlockDevice, holders: tuple[BlockDevice, ...]) -> int:
    """Copy the EFI System Partition of the image on ROOT (an md array) to every holder's ESP:
    the firmware reads those, never the array. Returns the bytes copied per holder."""
    subprocess.run(["blockdev", "--rereadpt", str(root.path)], capture_output=True)
    table = read_table(str(root.path))
    esp = next((p for p in table.partitions if p.type.upper() == ESP_TYPE), None)
    if esp is None:
        raise _fail(
            f"the image written to {root.name} has no EFI System Partition: a software RAID host boots by "
            "UEFI from the ESP copied to each disk; use a UEFI image"
        )
    if esp.size > software_raid.ESP_BYTES:
        raise _fail(
            f"the image's EFI System Partition is {esp.size // MIB} MiB; "
            f"the holders' ESP is {software_raid.ESP_BYTES // MIB} MiB"
        )
    for holder in holders:
        target = next(p for p in read_table(str(holder.path)).partitions if p.number == 1)
        _copy(root.path, esp.start, holder.path, target.start, esp.size)
    return esp.size


def _copy(src: Path, src_offset: int, dst: Path, dst_offset: int, length: int) -> None:
    with src.open("rb") as fin:
        fin.seek(src_offset)
        fd = os.open(dst, os.O_WRONLY)
        try:
            done = 0
            while done < length:
                chunk = fin.read(min(8 * MIB, length - done))
                if not chunk:
                    raise _fail(f"{src} ended {length - done} bytes short of its ESP")
                os.pwrite(fd, chunk, dst_offset + done)
                done += len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
