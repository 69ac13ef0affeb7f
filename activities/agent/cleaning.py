"""Disk cleaning: metadata (partition tables and signatures at both ends) or a full erase."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

from activities.agent.devices import BlockDevice

MIB = 1 << 20
# GPT's backup header sits in the last 33 sectors; most filesystem and RAID signatures lie
# in the first or last MiB. Zeroing both ends is what Ironic's metadata erase amounts to.
EDGE = MIB


def _zero(fd: int, offset: int, length: int) -> None:
    zeros = bytes(min(length, 4 * MIB))
    os.lseek(fd, offset, os.SEEK_SET)
    left = length
    while left > 0:
        left -= os.write(fd, zeros[: min(left, len(zeros))])


def wipe_metadata(dev: BlockDevice) -> None:
    if shutil.which("wipefs") and str(dev.path).startswith("/dev/"):
        subprocess.run(["wipefs", "--all", "--force", str(dev.path)], check=True, capture_output=True)
    fd = os.open(dev.path, os.O_WRONLY)
    try:
        edge = min(EDGE, dev.size_bytes)
        _zero(fd, 0, edge)
        _zero(fd, max(dev.size_bytes - EDGE, 0), edge)
        os.fsync(fd)
    finally:
        os.close(fd)


def erase(dev: BlockDevice, progress: Callable[[int], None]) -> int:
    """Overwrite every byte with zeros (Ironic's erase_devices, one pass)."""
    fd = os.open(dev.path, os.O_WRONLY)
    done = 0
    try:
        while done < dev.size_bytes:
            chunk = min(64 * MIB, dev.size_bytes - done)
            _zero(fd, done, chunk)
            done += chunk
            progress(done)
        os.fsync(fd)
    finally:
        os.close(fd)
    return done
