"""The image writer: stream over HTTP straight onto the root device, hashing as it goes.

Raw images are never held whole in memory or on disk: each chunk is hashed and written, and
only the checksum at the end decides whether the disk keeps them. qcow2 needs random access,
so it alone goes to a temporary file, is verified, then `qemu-img convert -n` writes it onto
the device. A mismatch wipes the device's partition tables and signatures, so a half-right
image can never boot.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from activities.agent import cleaning
from activities.agent.devices import BlockDevice
from metalflow.api.errors import ErrorName, permanent, transient
from metalflow.api.models import ChecksumType, ImageFormat, ImageSpec

CHUNK = 8 << 20
QCOW2_MAGIC = b"QFI\xfb"
_LENGTHS = {32: ChecksumType.MD5, 64: ChecksumType.SHA256, 128: ChecksumType.SHA512}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Written:
    bytes_written: int
    checksum: str
    checksum_type: ChecksumType


def _get(url: str, what: str, stream: bool) -> requests.Response:
    try:
        resp = requests.get(url, stream=stream, timeout=(10, 60))
    except requests.RequestException as err:
        raise transient("ImageFetchError", f"cannot fetch {what} {url}: {err}") from None
    if resp.status_code in (401, 403, 404, 410):
        resp.close()
        raise permanent(
            ErrorName.IMAGE_UNAVAILABLE,
            f"{what} {url} answered HTTP {resp.status_code}; fix spec.image "
            f"({'url' if what == 'image' else 'checksum'})",
        )
    if resp.status_code >= 400:
        resp.close()
        raise transient("ImageFetchError", f"{what} {url} answered HTTP {resp.status_code}")
    return resp


def expected_checksum(image: ImageSpec) -> tuple[str, ChecksumType]:
    """The digest to expect and its algorithm; a checksum URL is fetched and parsed."""
    value = image.checksum or ""
    if value.startswith(("http://", "https://")):
        text = _get(value, "checksum file", stream=False).text
        wanted = Path(urlsplit(image.url).path).name
        lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        pick = next((p[0] for p in lines if len(p) >= 2 and p[-1].lstrip("*") == wanted), None)
        if pick is None and len(lines) == 1:
            pick = lines[0][0]
        if pick is None:
            raise permanent(
                ErrorName.IMAGE_CHECKSUM,
                f"checksum file {value} has no line for {wanted!r}; it must list '<digest>  {wanted}'",
            )
        value = pick
    value = value.lower()
    kind = image.checksum_type
    if kind == ChecksumType.AUTO:
        if len(value) not in _LENGTHS:
            raise permanent(
                ErrorName.IMAGE_CHECKSUM,
                f"cannot tell the checksum type of a {len(value)}-digit digest; set spec.image.checksumType",
            )
        kind = _LENGTHS[len(value)]
    return value, kind


def write_image(
    image: ImageSpec, dev: BlockDevice, progress: Progress, workdir: Path | None = None
) -> Written:
    if image.format == ImageFormat.LIVE_ISO:
        raise permanent(
            ErrorName.IMAGE_FORMAT,
            "a live-iso image is booted from virtual media, not written; use a raw or qcow2 image",
        )
    want, kind = expected_checksum(image)
    # Open the download first: an image that is not there leaves the disk as it was.
    resp = _get(image.url, "image", stream=True)
    # A retried attempt starts from a clean device: no stale table from a half-written try.
    try:
        cleaning.wipe_metadata(dev)
    except BaseException:
        resp.close()
        raise
    total = int(resp.headers.get("Content-Length") or 0)
    digest = hashlib.new(kind.value)
    try:
        first = resp.raw.read(CHUNK)
        fmt = image.format or (ImageFormat.QCOW2 if first.startswith(QCOW2_MAGIC) else ImageFormat.RAW)
        if fmt == ImageFormat.QCOW2:
            with tempfile.NamedTemporaryFile(dir=workdir, suffix=".qcow2") as tmp:
                size = _copy(resp, first, digest, tmp.fileno(), total, progress)
                _verify(digest, want, kind, image, dev)
                _qemu_img_convert(tmp.name, dev)
        else:
            if total and total > dev.size_bytes:
                raise permanent(
                    ErrorName.IMAGE_FORMAT,
                    f"the image ({total} bytes) is larger than {dev.name} ({dev.size_bytes} bytes)",
                )
            fd = os.open(dev.path, os.O_WRONLY)
            try:
                size = _copy(resp, first, digest, fd, total, progress)
            finally:
                os.close(fd)
            _verify(digest, want, kind, image, dev)
    except requests.RequestException as err:
        raise transient("ImageFetchError", f"the image download broke off: {err}") from None
    finally:
        resp.close()
    return Written(size, want, kind)


def _copy(
    resp: requests.Response, first: bytes, digest: hashlib._Hash, fd: int, total: int, progress: Progress
) -> int:
    """Hash and write every chunk as it arrives; report progress about once a second."""
    written, last, chunk = 0, 0.0, first
    while chunk:
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
        written += len(chunk)
        if time.monotonic() - last > 1:
            progress(written, total)
            last = time.monotonic()
        chunk = resp.raw.read(CHUNK)
    os.fsync(fd)
    progress(written, total)
    return written


def _verify(digest: hashlib._Hash, want: str, kind: ChecksumType, image: ImageSpec, dev: BlockDevice) -> None:
    got = digest.hexdigest()
    if got != want:
        cleaning.wipe_metadata(dev)
        raise permanent(
            ErrorName.IMAGE_CHECKSUM,
            f"image {image.url} has {kind.value} {got}, expected {want}; {dev.name} was wiped. "
            "Fix spec.image.checksum or the image",
        )


def _qemu_img_convert(src: str, dev: BlockDevice) -> None:
    """qcow2 -> raw onto the existing device (-n: never recreate or truncate the target)."""
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", src], capture_output=True, text=True, check=False
    )
    if info.returncode != 0:
        raise permanent(ErrorName.IMAGE_FORMAT, f"the image is not a valid qcow2: {info.stderr.strip()}")
    described = json.loads(info.stdout)
    if described.get("format") != "qcow2":
        raise permanent(
            ErrorName.IMAGE_FORMAT,
            f"the image is {described.get('format') or 'of unknown format'}, not qcow2; "
            "fix spec.image.format (or leave it unset to detect it)",
        )
    virtual = int(described.get("virtual-size", 0))
    if virtual > dev.size_bytes:
        raise permanent(
            ErrorName.IMAGE_FORMAT,
            f"the image's virtual size ({virtual} bytes) exceeds {dev.name} ({dev.size_bytes} bytes)",
        )
    done = subprocess.run(
        ["qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw", src, str(dev.path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        cleaning.wipe_metadata(dev)
        raise transient("ImageConvertError", f"qemu-img convert failed: {done.stderr.strip()}")
