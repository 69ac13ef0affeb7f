"""The image writer: stream over HTTP straight onto the root device, hashing as it goes.

Nothing touches the device until the image has said what it is: the first chunk of the download
shows its format (qcow2's magic) and, with Content-Length or the qcow2 header's virtual size,
whether it fits. A declared format the bytes contradict is an ImageFormatError, an image larger
than the device an ImageTooLarge; both are permanent and leave every byte of the device as it was.

Raw images are never held whole in memory or on disk: each chunk is hashed and written (read,
hash and write overlap in threads: image_pipeline), and only the checksum at the end decides
whether the disk keeps them; a mismatch wipes the device's partition tables and signatures, so
a half-right image can never boot. qcow2 needs random access, so it goes to a temporary file
and is verified (checksum, `qemu-img info`) before the device is wiped and `qemu-img convert -n`
writes it. Either way the device is flushed before the writer returns.

A gzip download (an `oci://` image's gzip layer, through the boot server) is inflated as it
streams; the checksum is over the bytes as sent, which is the layer's digest.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from temporalio.exceptions import ApplicationError

from activities.agent import boot_auth, cleaning
from activities.agent.devices import BlockDevice
from activities.agent.image_pipeline import BrokeOff, Download
from metalflow.api.errors import ErrorName, permanent, transient
from metalflow.api.models import ChecksumType, ImageFormat, ImageSpec

QCOW2_MAGIC = b"QFI\xfb"
VMDK_MAGIC = b"KDMV"  # a hosted sparse extent with its descriptor embedded (monolithicSparse)
VDI_SIGNATURE = b"\x7f\x10\xda\xbe"  # little-endian 0xbeda107f at offset 0x40
# Formats qemu-img reads from a downloaded file and converts to raw on the device.
CONVERTED = (ImageFormat.QCOW2, ImageFormat.VDI, ImageFormat.VMDK)


def detect_format(first: bytes) -> ImageFormat:
    """The image's format from its first bytes; anything without a known header is raw."""
    if first.startswith(QCOW2_MAGIC):
        return ImageFormat.QCOW2
    if first.startswith(VMDK_MAGIC):
        return ImageFormat.VMDK
    if first[0x40:0x44] == VDI_SIGNATURE:
        return ImageFormat.VDI
    return ImageFormat.RAW


QCOW2_EXTERNAL_DATA = 1 << 2  # incompatible feature bit: the guest data lives in another file
_LENGTHS = {32: ChecksumType.MD5, 64: ChecksumType.SHA256, 128: ChecksumType.SHA512}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Written:
    bytes_written: int
    checksum: str
    checksum_type: ChecksumType


def _get(
    url: str, what: str, stream: bool, headers: dict[str, str] | None = None, verify: str | bool = True
) -> requests.Response:
    try:
        resp = requests.get(url, stream=stream, timeout=(10, 60), headers=headers, verify=verify)
    except requests.RequestException as err:
        raise transient("ImageFetchError", f"cannot fetch {what} {url}: {err}") from None
    if headers and (error := boot_auth.refused(resp, what, url)) is not None:
        resp.close()
        raise error
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


@dataclass(frozen=True)
class _Head:
    """What the response and its first chunk tell before anything is written."""

    format: ImageFormat
    length: int  # Content-Length; 0 when the server sent none


class _PastTheEnd(Exception):
    """The stream went on past the device's end, which no Content-Length had said in advance."""


def write_image(
    image: ImageSpec,
    dev: BlockDevice,
    progress: Progress,
    workdir: Path | None = None,
    compression: str = "",
    headers: dict[str, str] | None = None,
    verify: str | bool = True,
) -> Written:
    """`headers`, `verify`: this boot's agent token and the boot server's CA when the image is on
    the boot server (an OCI grant)."""
    if image.format == ImageFormat.LIVE_ISO:
        raise permanent(
            ErrorName.IMAGE_FORMAT,
            "a live-iso image is booted from virtual media, not written; use a raw, qcow2, vdi or vmdk image",
        )
    want, kind = expected_checksum(image)
    # Open the download first: an image that is not there leaves the disk as it was.
    resp = _get(image.url, "image", stream=True, headers=headers, verify=verify)
    src = Download(resp, hashlib.new(kind.value), compression)
    head: _Head | None = None
    try:
        chunks = src.chunks()
        first = next(chunks, b"")
        head = _inspect(resp, first, src.gzip, image, dev)
        stream = itertools.chain((first,), chunks)
        if head.format in CONVERTED:
            spool = Path(workdir or tempfile.gettempdir())
            _check_spool_room(spool, head, image)
            with tempfile.NamedTemporaryFile(dir=spool, suffix=f".{head.format.value}") as tmp:
                try:
                    size = _copy(stream, head, tmp.fileno(), progress, sync=False)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    raise _spool_full(spool, head, image, "it ran out of room mid-download") from None
                _whole(src, image, dev, written=False)
                _verify(src.digest.hexdigest(), want, kind, image, dev, written=False)
                _qemu_img_check(tmp.name, image, dev, head.format)
                # A retried attempt starts from a clean device: no stale table from a half-written try.
                cleaning.wipe_metadata(dev)
                _qemu_img_convert(tmp.name, dev, head.format)
        else:
            size = _write_raw(stream, head, image, dev, progress)
            _whole(src, image, dev, written=True)
            _verify(src.digest.hexdigest(), want, kind, image, dev, written=True)
    except zlib.error as err:
        if head is not None and head.format == ImageFormat.RAW:
            cleaning.wipe_metadata(dev)  # half written: never leave it bootable
        raise permanent(
            ErrorName.IMAGE_FORMAT,
            f"image {image.url} is declared gzip-compressed but does not inflate ({err}); "
            "fix the layer's media type or push it again",
        ) from None
    except BrokeOff as err:
        raise transient("ImageFetchError", f"the image download broke off: {err}") from None
    finally:
        src.close()
        resp.close()
    return Written(size, want, kind)


def _spool_full(spool: Path, head: _Head, image: ImageSpec, why: str) -> ApplicationError:
    size = f"{head.length >> 20} MiB" if head.length else "its size"
    return permanent(
        ErrorName.IMAGE_SPOOL_FULL,
        f"image {image.url} is {head.format.value}, which is downloaded whole ({size}) before it is "
        f"converted onto the disk, but the ramdisk's {spool} cannot hold it: {why} "
        f"({shutil.disk_usage(spool).free >> 20} MiB free). Serve a raw image (it streams to the "
        "disk) or give the host more RAM. The disk was not touched.",
    )


def _check_spool_room(spool: Path, head: _Head, image: ImageSpec) -> None:
    """A qcow2 (vdi, vmdk) goes to the ramdisk's RAM first: refuse one that cannot fit, up front."""
    if head.length and head.length > shutil.disk_usage(spool).free:
        raise _spool_full(spool, head, image, "its Content-Length is larger than the room left")


def _inspect(
    resp: requests.Response, first: memoryview | bytes, gzip: bool, image: ImageSpec, dev: BlockDevice
) -> _Head:
    """Check the first chunk's format against spec.image.format and the size against the device."""
    # a compressed download's length says nothing about the image's size
    length = 0 if gzip else int(resp.headers.get("Content-Length") or 0)
    peek = bytes(first[:4096])  # every header we read is in its first 80 bytes
    found = detect_format(peek)
    if image.format and image.format != found:
        shows = f"{found.value}'s header" if found != ImageFormat.RAW else "no qcow2, vdi or vmdk header"
        raise permanent(
            ErrorName.IMAGE_FORMAT,
            f"image {image.url} is declared {image.format.value} but is {found.value} (its first bytes "
            f"show {shows}); fix spec.image.format (or leave it unset to detect it)",
        )
    if found == ImageFormat.QCOW2:
        virtual = _qcow2_virtual_size(peek, image)
        if virtual > dev.size_bytes:
            raise _too_large(image, f"{virtual} bytes (its qcow2 virtual size)", dev)
    elif found in CONVERTED:
        pass  # vdi/vmdk: qemu-img reads the virtual size once the file is here (_qemu_img_check)
    elif length > dev.size_bytes:
        raise _too_large(image, f"{length} bytes (its Content-Length)", dev)
    elif len(first) > dev.size_bytes:
        raise _too_large(image, f"over {dev.size_bytes} bytes (no Content-Length; its first chunk)", dev)
    return _Head(found, length)


def _qcow2_virtual_size(first: bytes, image: ImageSpec) -> int:
    """The virtual size from the header (big-endian u64 at offset 24).

    A backing file or an external data file is refused: `qemu-img convert` would read it from
    the agent's own file system onto the disk (Ironic refuses them for the same reason).
    """
    if len(first) < 32:
        raise permanent(ErrorName.IMAGE_FORMAT, f"image {image.url} ends inside its qcow2 header")
    version, backing = struct.unpack_from(">IQ", first, 4)
    incompatible = struct.unpack_from(">Q", first, 72)[0] if version >= 3 and len(first) >= 80 else 0
    if backing or incompatible & QCOW2_EXTERNAL_DATA:
        raise permanent(
            ErrorName.IMAGE_FORMAT,
            f"image {image.url} is a qcow2 with a {'backing' if backing else 'external data'} file; "
            "publish a self-contained image (qemu-img convert -O qcow2 IN OUT)",
        )
    return int(struct.unpack_from(">Q", first, 24)[0])


def _too_large(image: ImageSpec, size: str, dev: BlockDevice) -> ApplicationError:
    return permanent(
        ErrorName.IMAGE_TOO_LARGE,
        f"image {image.url} is {size}, larger than {dev.name} ({dev.size_bytes} bytes); "
        "choose a larger disk with spec.rootDeviceHints or a smaller image",
    )


def _write_raw(
    src: Iterator[memoryview | bytes],
    head: _Head,
    image: ImageSpec,
    dev: BlockDevice,
    progress: Progress,
) -> int:
    """Wipe, then stream onto the device.

    With Content-Length an oversized image is refused before the wipe (`_inspect`). Without it
    the size shows only while streaming: the write then stops before the first byte past the
    device's end (a file disk never grows, a block device never sees a short write) and the
    device is wiped. What is guaranteed then is a typed permanent error and no bootable half
    image, not an untouched disk.
    """
    # A retried attempt starts from a clean device: no stale table from a half-written try.
    cleaning.wipe_metadata(dev)
    fd = os.open(dev.path, os.O_WRONLY)
    try:
        return _copy(src, head, fd, progress, limit=dev.size_bytes)
    except _PastTheEnd:
        cleaning.wipe_metadata(dev)
        seen = f"over {dev.size_bytes} bytes (no Content-Length: writing stopped at the end; wiped)"
        raise _too_large(image, seen, dev) from None
    finally:
        os.close(fd)


def _copy(
    src: Iterator[memoryview | bytes],
    head: _Head,
    fd: int,
    progress: Progress,
    limit: int | None = None,
    sync: bool = True,
) -> int:
    """Write every chunk as it arrives (the pipeline hashes it meanwhile); report progress about
    once a second. `sync`: fsync before returning, so the image is on the disk when the host is
    power-cycled (a spool file is only read back, then deleted: no fsync).

    With a limit, no chunk that would end past it is written (`_PastTheEnd` instead).
    """
    written, last = 0, 0.0
    for chunk in src:
        if limit is not None and written + len(chunk) > limit:
            raise _PastTheEnd
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
        written += len(chunk)
        if time.monotonic() - last > 1:
            progress(written, head.length)
            last = time.monotonic()
    if sync:
        os.fsync(fd)
    progress(written, head.length)
    return written


def _whole(src: Download, image: ImageSpec, dev: BlockDevice, written: bool) -> None:
    if not src.cut_short():
        return
    if written:
        cleaning.wipe_metadata(dev)
    raise permanent(
        ErrorName.IMAGE_FORMAT,
        f"image {image.url}: its gzip stream ends before its end-of-stream marker (a cut-off file); "
        f"{dev.name} was {'wiped' if written else 'not touched'}. Push the whole compressed image",
    )


def _verify(
    got: str, want: str, kind: ChecksumType, image: ImageSpec, dev: BlockDevice, written: bool
) -> None:
    """A mismatch is permanent; a device already written is wiped first so the image cannot boot."""
    if got == want:
        return
    if written:
        cleaning.wipe_metadata(dev)
    raise permanent(
        ErrorName.IMAGE_CHECKSUM,
        f"image {image.url} has {kind.value} {got}, expected {want}; {dev.name} was "
        f"{'wiped' if written else 'not touched'}. Fix spec.image.checksum or the image",
    )


def _qemu_img_check(
    src: str, image: ImageSpec, dev: BlockDevice, fmt: ImageFormat = ImageFormat.QCOW2
) -> None:
    """qemu-img's reading of the whole downloaded file must agree with its header: one
    self-contained image of that format that fits the device."""
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", fmt.value, src],
        capture_output=True,
        text=True,
        check=False,
    )
    if info.returncode != 0:
        raise permanent(
            ErrorName.IMAGE_FORMAT, f"image {image.url} is not a valid {fmt.value}: {info.stderr.strip()}"
        )
    doc = json.loads(info.stdout)
    extents = (doc.get("format-specific", {}).get("data", {}) or {}).get("extents", [])
    if doc.get("backing-filename") or any(e.get("filename") != src for e in extents):
        raise permanent(
            ErrorName.IMAGE_FORMAT,
            f"image {image.url} refers to other files (backing file or extents); publish a "
            f"self-contained image (qemu-img convert -O {fmt.value} IN OUT)",
        )
    virtual = int(doc.get("virtual-size", 0))
    if virtual > dev.size_bytes:
        raise _too_large(image, f"{virtual} bytes (its {fmt.value} virtual size)", dev)


def _qemu_img_convert(src: str, dev: BlockDevice, fmt: ImageFormat = ImageFormat.QCOW2) -> None:
    """qcow2/vdi/vmdk -> raw onto the existing device (-n: never recreate or truncate the target).

    `-t writeback`: qemu-img flushes the target before it exits; its default for convert
    (cache=unsafe) never does, and a power-cycle right after would lose what was in the cache.
    """
    done = subprocess.run(
        ["qemu-img", "convert", "-t", "writeback", "-n", "-f", fmt.value, "-O", "raw", src, str(dev.path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        cleaning.wipe_metadata(dev)
        raise transient("ImageConvertError", f"qemu-img convert failed: {done.stderr.strip()}")
