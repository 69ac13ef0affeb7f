"""Verified erase (spec.erase): probe what each disk supports, plan every disk before erasing any,
erase with the disk's own command where it has one, then read samples back past the page cache.

The disks' commands come from nvme-cli (`nvme id-ctrl`, `nvme format`) and hdparm (`hdparm -I`,
ATA security erase), both in the deploy ramdisk; overwrite needs nothing but the device.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from activities.agent import cleaning
from activities.agent.devices import BlockDevice
from metalflow.api.erase import DiskErasure, EraseMethod, EraseSpec
from metalflow.api.errors import ErrorName, permanent

BLOCK = 4096
FORMAT_TIMEOUT_S = 4 * 3600  # a large NVMe user-data erase; ATA gives its own estimate
_NVME_OACS_FORMAT = 1 << 1  # Identify Controller OACS bit 1: Format NVM supported
_NVME_FNA_CRYPTO = 1 << 2  # FNA bit 2: cryptographic erase supported


@dataclass(frozen=True)
class Planned:
    device: BlockDevice
    method: EraseMethod


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _nvme_support(dev: BlockDevice) -> dict[EraseMethod, str]:
    if not shutil.which("nvme"):
        reason = "nvme-cli is not installed in the ramdisk"
        return {EraseMethod.NVME_FORMAT: reason, EraseMethod.NVME_CRYPTO_ERASE: reason}
    out = _run(["nvme", "id-ctrl", str(dev.path), "--output-format=json"])
    if out.returncode != 0:
        reason = f"nvme id-ctrl failed: {(out.stderr or out.stdout).strip()[:200]}"
        return {EraseMethod.NVME_FORMAT: reason, EraseMethod.NVME_CRYPTO_ERASE: reason}
    ident = json.loads(out.stdout)
    oacs, fna = int(ident.get("oacs", 0)), int(ident.get("fna", 0))
    fmt = "" if oacs & _NVME_OACS_FORMAT else "the controller does not support Format NVM (OACS bit 1)"
    crypto = fmt or (
        "" if fna & _NVME_FNA_CRYPTO else "the controller has no cryptographic erase (FNA bit 2)"
    )
    return {EraseMethod.NVME_FORMAT: fmt, EraseMethod.NVME_CRYPTO_ERASE: crypto}


def ata_security(hdparm_identify: str) -> tuple[bool, bool, bool]:
    """(supported, frozen, enhanced) from `hdparm -I`'s Security section."""
    lines = hdparm_identify.split("Security:", 1)[1].splitlines() if "Security:" in hdparm_identify else []
    section: list[str] = []
    for line in lines[1:]:
        if line and not line[0].isspace():
            break  # the next section
        section.append(" ".join(line.split()))
    return (
        "supported" in section,
        "frozen" in section,
        "supported: enhanced erase" in section,
    )


def _ata_support(dev: BlockDevice) -> str:
    if not shutil.which("hdparm"):
        return "hdparm is not installed in the ramdisk"
    out = _run(["hdparm", "-I", str(dev.path)])
    if out.returncode != 0:
        return f"hdparm -I failed: {(out.stderr or out.stdout).strip()[:200]}"
    supported, frozen, _ = ata_security(out.stdout)
    if not supported:
        return "the disk does not support the ATA security feature set (hdparm -I: Security not supported)"
    if frozen:
        return "ATA security is frozen (the firmware froze it at boot; a suspend/resume cycle unfreezes it)"
    return ""


def support(dev: BlockDevice) -> dict[EraseMethod, str]:
    """Each method and why this disk cannot do it ("" when it can)."""
    nvme = dev.bus == "nvme"
    not_nvme = f"{dev.name} is not an NVMe disk"
    got = (
        _nvme_support(dev)
        if nvme
        else {EraseMethod.NVME_FORMAT: not_nvme, EraseMethod.NVME_CRYPTO_ERASE: not_nvme}
    )
    got[EraseMethod.ATA_SECURE_ERASE] = (
        _ata_support(dev) if dev.bus == "sata" else f"{dev.name} is not a SATA disk"
    )
    got[EraseMethod.OVERWRITE] = ""
    return got


def _describe(dev: BlockDevice) -> str:
    return f"{dev.name} (serial {dev.serial or 'unknown'}, {dev.bus})"


def plan(devices: list[BlockDevice], spec: EraseSpec) -> list[Planned]:
    """A method for every disk, or a typed error naming each disk that has none; nothing erased yet."""
    planned: list[Planned] = []
    problems: list[str] = []
    for dev in devices:
        can = support(dev)
        method = next((m for m in spec.candidates() if not can[m]), None)
        if method is not None:
            planned.append(Planned(dev, method))
            continue
        offers = ", ".join(m.value for m in can if not can[m])
        why = "; ".join(f"{m.value}: {can[m]}" for m in spec.candidates())
        problems.append(f"{_describe(dev)} cannot be erased with {why}; it supports {offers}")
    if problems:
        asked = (
            spec.method.value
            if spec.method != EraseMethod.AUTO
            else "auto over " + ", ".join(m.value for m in spec.allowed_methods)
        )
        raise permanent(
            ErrorName.ERASE_UNSUPPORTED,
            f"spec.erase.method {asked}: "
            + " | ".join(problems)
            + ". Nothing was erased; allow a method every disk supports (or use method auto).",
        )
    return planned


# ---- reading back past the page cache ----


@contextlib.contextmanager
def _reader(dev: BlockDevice) -> Iterator[int]:
    try:
        fd = os.open(dev.path, os.O_RDONLY | os.O_DIRECT)
    except OSError as err:  # tmpfs and some test files: no O_DIRECT, so drop the cache instead
        if err.errno != errno.EINVAL:
            raise
        fd = os.open(dev.path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    try:
        yield fd
    finally:
        os.close(fd)


def sample_offsets(size_bytes: int, count: int) -> list[int]:
    """Both ends and `count` random blocks; random so no fixed layout can pass it."""
    blocks = size_bytes // BLOCK
    rng = secrets.SystemRandom()
    chosen = {0, max(blocks - 1, 0)} | {rng.randrange(blocks) for _ in range(count)}
    return sorted(b * BLOCK for b in chosen)


def read_samples(dev: BlockDevice, offsets: list[int]) -> list[bytes]:
    buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
    out = []
    with _reader(dev) as fd:
        for off in offsets:
            n = os.preadv(fd, [buf], off)
            out.append(bytes(buf[:n]))
    return out


def _check(method: EraseMethod, before: list[bytes], after: list[bytes]) -> tuple[str, int]:
    """(what was verified, samples checked); raises ValueError on the first block that fails."""
    if method in (EraseMethod.OVERWRITE,):
        kind, ok = "zeroes", lambda b, a: a.count(0) == len(a)
    elif method == EraseMethod.NVME_FORMAT:  # deallocated blocks read as 0x00 or 0xFF (DLFEAT)
        kind, ok = "blank", lambda b, a: a.count(0) == len(a) or a.count(0xFF) == len(a)
    else:  # crypto erase and enhanced ATA erase leave noise: the old data must be gone
        kind, ok = "changed", lambda b, a: b.count(0) == len(b) or a != b
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        if not ok(b, a):
            raise ValueError(f"sample {i} still reads as before or is not {kind}")
    return kind, len(after)


# ---- the methods ----


def _wait(proc: subprocess.Popen[str], beat: Callable[[int], None], timeout: float) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            out, _ = proc.communicate(timeout=10)
            return proc.returncode, out
        except subprocess.TimeoutExpired:
            beat(0)
            if time.monotonic() > deadline:
                proc.kill()
                return -1, f"no answer in {timeout:.0f}s"


def _command(
    argv: list[str], beat: Callable[[int], None], timeout: float = FORMAT_TIMEOUT_S, secret: str = ""
) -> None:
    """Run a disk command, heartbeating; its output in the error, `secret` masked (hdparm echoes
    the security password it was given)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rc, out = _wait(proc, beat, timeout)
    if rc != 0:
        shown = out.replace(secret, "***") if secret else out
        raise RuntimeError(f"{argv[0]} {argv[1]} exited {rc}: {shown.strip()[-300:]}")


def _nvme_format(dev: BlockDevice, ses: int, beat: Callable[[int], None]) -> None:
    _command(["nvme", "format", str(dev.path), f"--ses={ses}", "--force"], beat)


def _ata_erase(dev: BlockDevice, beat: Callable[[int], None]) -> bool:
    """SECURITY ERASE UNIT with a one-time password (never logged); enhanced when offered."""
    _, _, enhanced = ata_security(_run(["hdparm", "-I", str(dev.path)]).stdout)
    password = secrets.token_hex(8)
    _command(
        ["hdparm", "--user-master", "u", "--security-set-pass", password, str(dev.path)], beat, 60, password
    )
    erase = "--security-erase-enhanced" if enhanced else "--security-erase"
    try:
        _command(["hdparm", "--user-master", "u", erase, password, str(dev.path)], beat, secret=password)
    except RuntimeError:
        # do not leave the disk locked with a password nobody knows
        _run(["hdparm", "--user-master", "u", "--security-disable", password, str(dev.path)])
        raise
    return enhanced


def erase_disk(item: Planned, spec: EraseSpec, progress: Callable[[int], None]) -> DiskErasure:
    """Erase one planned disk and verify it; a typed error names the disk when either fails."""
    dev, method = item.device, item.method
    offsets = sample_offsets(dev.size_bytes, spec.verify_samples)
    started = time.monotonic()
    try:
        before = read_samples(dev, offsets)
        checked_as = method
        if method == EraseMethod.OVERWRITE:
            cleaning.erase(dev, progress)
        elif method in (EraseMethod.NVME_FORMAT, EraseMethod.NVME_CRYPTO_ERASE):
            _nvme_format(dev, 2 if method == EraseMethod.NVME_CRYPTO_ERASE else 1, progress)
        elif method == EraseMethod.ATA_SECURE_ERASE:
            enhanced = _ata_erase(dev, progress)
            checked_as = EraseMethod.NVME_CRYPTO_ERASE if enhanced else EraseMethod.OVERWRITE
        verified, samples = _check(checked_as, before, read_samples(dev, offsets))
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as err:
        raise permanent(
            ErrorName.ERASE_FAILED, f"erasing {_describe(dev)} with {method.value} failed: {err}"
        ) from None
    return DiskErasure(
        device=dev.name,
        serial=dev.serial,
        size_bytes=dev.size_bytes,
        method=method,
        verified=verified,
        samples=samples,
        seconds=round(time.monotonic() - started, 1),
        finished_at=datetime.now(UTC),
    )
