"""Writing the staged config drive onto the deployed disk as a partition, as Ironic does.

cloud-init's ConfigDrive datasource finds its drive through blkid (a file system labelled
config-2); a file system written at a raw offset with no partition-table entry is no block
device, so the OS never sees it. So, as Ironic's agent does, after the image is written:

- an existing partition holding a config-2 file system is reused (a retried write, a redeploy);
- GPT: the backup table is moved to the disk's real end (the image was smaller than the disk),
  then a partition named config-2 takes the last 64 MiB;
- MBR: a primary partition takes the last 64 MiB below the 2 TiB an MBR can address; a disk
  whose four primary slots are all used is refused with a clear error (no logical partitions);
- no partition table (a bare file system image): the drive goes into the last 64 MiB, aligned to
  1 MiB, as before (what Ironic does when it cannot partition; cloud-init will not find it).

Partitions are made with sfdisk (util-linux) on the whole device and written by byte offset: the
ramdisk needs no partition device nodes (and image files in the tests have none).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from dataclasses import dataclass

import requests

from activities.agent import boot_auth
from activities.agent.devices import BlockDevice
from metalflow.api.configdrive import ConfigDriveStaged
from metalflow.api.errors import ErrorName, permanent, transient

MIB = 1 << 20
REGION = 64 * MIB
LABEL = "config-2"
MBR_LIMIT = 2 << 40  # 2 TiB: what 32-bit sector numbers of 512 bytes address
LINUX_FS_GPT = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def fetch(
    staged: ConfigDriveStaged, headers: dict[str, str] | None = None, verify: str | bool = True
) -> bytes:
    """The staged drive, fetched with this boot's agent token (`headers`, boot_auth.headers_for),
    over HTTPS checked against `verify` (boot_auth.verify_for)."""
    try:
        resp = requests.get(staged.url, headers=headers, timeout=(10, 60), verify=verify)
    except requests.RequestException as err:
        raise transient("ConfigDriveFetchError", f"cannot fetch the config drive: {err}") from None
    if (error := boot_auth.refused(resp, "config drive", staged.url)) is not None:
        raise error
    if resp.status_code != 200:
        raise transient("ConfigDriveFetchError", f"config drive {staged.url} answered {resp.status_code}")
    data = resp.content
    if hashlib.sha256(data).hexdigest() != staged.sha256:
        raise transient("ConfigDriveFetchError", "the config drive arrived corrupted (sha256 differs)")
    if len(data) > REGION - MIB:
        raise permanent(ErrorName.SECRET_INVALID, "the config drive is over 63 MiB; shrink userData")
    return data


USER_DATA = "/openstack/latest/user_data"


def user_data(data: bytes) -> bytes | None:
    """The drive's userData (what the agent must never log), or None if it has none."""
    import pycdlib  # only when a drive is written: the agent's start does not pay for it

    iso = pycdlib.PyCdlib()
    try:
        iso.open_fp(io.BytesIO(data))
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, joliet_path=USER_DATA)
        return out.getvalue()
    except Exception:
        return None
    finally:
        try:
            iso.close()
        except Exception:
            pass


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    name: str = ""
    type: str = ""  # GPT: the type GUID; dos: the id, as sfdisk prints them


@dataclass(frozen=True)
class Table:
    label: str  # "gpt" | "dos" | "" (none)
    sector: int
    partitions: tuple[Partition, ...]


def _sfdisk(path: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", *args, path],
        input=stdin,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise permanent(
            ErrorName.CONFIG_DRIVE_PARTITION,
            f"sfdisk {' '.join(args)} on {path} failed: {(done.stderr or done.stdout).strip()[-500:]}",
        )
    return done.stdout


def _pttype(path: str) -> str:
    """The partition table blkid's low-level probe sees on PATH ("gpt", "dos" or "")."""
    done = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "PTTYPE", path], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def read_table(path: str) -> Table:
    label = _pttype(path)
    if label not in ("gpt", "dos"):
        return Table("", 512, ())
    table = json.loads(_sfdisk(path, "--json"))["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    parts = tuple(
        Partition(
            number=int(p["node"][len(path) :].lstrip("p") or 0),
            start=int(p["start"]) * sector,
            size=int(p["size"]) * sector,
            name=p.get("name", ""),
            type=p.get("type", ""),
        )
        for p in table.get("partitions", ())
    )
    return Table(label, sector, parts)


def fs_label(path: str, offset: int, size: int) -> str:
    """The label of the file system at OFFSET (blkid's low-level probe on the device)."""
    done = subprocess.run(
        ["blkid", "-p", "-O", str(offset), "-S", str(size), "-o", "value", "-s", "LABEL", path],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def _existing(path: str, table: Table) -> Partition | None:
    for p in table.partitions:
        if p.size <= REGION and (p.name == LABEL or fs_label(path, p.start, p.size).lower() == LABEL):
            return p
    return None


def _region(dev: BlockDevice, table: Table, end: int) -> tuple[int, int]:
    """(start, size) in bytes of the last 64 MiB below END, 1 MiB aligned, past every partition."""
    start = (end - REGION) // MIB * MIB
    size = min(REGION, end - start)
    last = max((p.start + p.size for p in table.partitions), default=0)
    if last > start:
        raise permanent(
            ErrorName.CONFIG_DRIVE_PARTITION,
            f"no room for a config drive partition on {dev.name}: the image's partitions reach "
            f"{last // MIB} MiB and the drive needs the last 64 MiB of the disk "
            f"({dev.size_bytes // MIB} MiB); use a smaller image or a larger root device",
        )
    return start, size


def partition(dev: BlockDevice) -> int:
    """Make (or find) the config drive's partition; return its byte offset. Every check runs
    before the first write to the disk."""
    path = str(dev.path)
    table = read_table(path)
    if not table.label:
        return (dev.size_bytes - REGION) // MIB * MIB
    found = _existing(path, table)
    s = table.sector
    if table.label == "gpt":
        if found is None:
            # from 64 MiB before the end to the last usable sector (the backup table follows)
            start, _ = _region(dev, table, dev.size_bytes)
        # The image's backup GPT sits at the image's end, not the disk's: move it there first.
        _sfdisk(path, "--relocate", "gpt-bak-std")
        if found is not None:
            return found.start
        _sfdisk(path, "--append", stdin=f"start={start // s}, type={LINUX_FS_GPT}, name={LABEL}\n")
        return start
    if found is not None:
        return found.start
    if len(table.partitions) >= 4 or any(p.number > 4 for p in table.partitions):
        raise permanent(
            ErrorName.CONFIG_DRIVE_PARTITION,
            f"{dev.name} has an MBR partition table whose four primary partitions are used "
            f"({len(table.partitions)} partitions); an MBR image for a config drive must leave "
            "one primary slot free, or use a GPT image",
        )
    start, size = _region(dev, table, min(dev.size_bytes, MBR_LIMIT))
    _sfdisk(path, "--append", stdin=f"start={start // s}, size={size // s}, type=83\n")
    return start


def write(dev: BlockDevice, data: bytes) -> int:
    """Write the drive; return the byte offset it starts at."""
    offset = partition(dev)
    fd = os.open(dev.path, os.O_WRONLY)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return offset
