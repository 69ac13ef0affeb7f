"""Writing the staged config drive onto the deployed disk, as Ironic does.

With a GPT image (and sgdisk present) the drive gets its own partition at the end of the disk,
labelled config-2; otherwise it is written into the last 64 MiB, aligned to 1 MiB, which is
where Ironic puts it when it cannot partition.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess

import requests

from activities.agent.devices import BlockDevice
from metalflow.api.configdrive import ConfigDriveStaged
from metalflow.api.errors import ErrorName, permanent, transient

MIB = 1 << 20
REGION = 64 * MIB


def fetch(staged: ConfigDriveStaged) -> bytes:
    try:
        resp = requests.get(staged.url, timeout=(10, 60))
    except requests.RequestException as err:
        raise transient("ConfigDriveFetchError", f"cannot fetch the config drive: {err}") from None
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


def _has_gpt(dev: BlockDevice) -> bool:
    with open(dev.path, "rb") as f:
        f.seek(512)
        return f.read(8) == b"EFI PART"


def _gpt_partition(dev: BlockDevice) -> int | None:
    """Make a config-2 partition in the last 64 MiB; return its byte offset, or None."""
    if not (shutil.which("sgdisk") and _has_gpt(dev)):
        return None
    path = str(dev.path)
    subprocess.run(["sgdisk", "-e", path], check=True, capture_output=True)  # backup GPT to the end
    start_sector = (dev.size_bytes - REGION) // 512
    subprocess.run(
        ["sgdisk", "-n", f"0:{start_sector}:0", "-t", "0:0700", "-c", "0:config-2", path],
        check=True,
        capture_output=True,
    )
    return start_sector * 512


def write(dev: BlockDevice, data: bytes) -> int:
    """Write the drive; return the byte offset it starts at."""
    offset = _gpt_partition(dev)
    if offset is None:
        offset = (dev.size_bytes - REGION) // MIB * MIB
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
