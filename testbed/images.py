"""Small but real OS images for the demo and tests: raw bytes with a findable marker, and qcow2."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

MARKER = b"METALFLOW-TEST-IMAGE"
_MIB = 1 << 20


@dataclass(frozen=True)
class BuiltImage:
    path: Path
    sha256: str
    size: int


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * _MIB):
            digest.update(chunk)
    return digest.hexdigest()


def build_raw_image(path: Path, size_mib: int = 64, label: str = "demo") -> BuiltImage:
    """A raw disk image: a marker at the start and the end, pseudo-random data every MiB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = MARKER + b":" + label.encode()
    with path.open("wb") as f:
        for i in range(size_mib):
            block = bytearray(hashlib.sha256(f"{label}-{i}".encode()).digest() * (_MIB // 32))
            if i == 0:
                block[: len(marker)] = marker
            if i == size_mib - 1:
                block[-len(marker) :] = marker
            f.write(block)
    return BuiltImage(path, sha256_of(path), size_mib * _MIB)


def convert_to_qcow2(raw: BuiltImage, path: Path) -> BuiltImage:
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw.path), str(path)], check=True)
    return BuiltImage(path, sha256_of(path), os.path.getsize(path))
