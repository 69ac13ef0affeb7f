"""OCI disk images: `oci://registry/repository[:tag][@sha256:digest]`, read as Ironic reads them.

Pure (no network): the URL grammar, the choice of a manifest from an image index, and the one
layer a disk-image manifest must have. The distribution-API client is `activities/oci.py`; the
boot server streams the chosen blob to the agent with the registry credentials added there.

Ironic's convention (ironic/common/image_service.py, OciImageService; doc admin/oci-container-
registry.rst), which metalflow follows:
- no tag means `latest`; a digest in the URL pins the manifest (its content is checked against it);
- an index is narrowed by `platform.architecture` (x86_64 == amd64, aarch64 == arm64; an entry
  without a platform matches any host), then ordered by the manifest's `disktype` annotation:
  raw (and applehv, which is raw) before qcow2 (and qemu) when the agent streams the image,
  entries without one last, entries with any other disktype skipped;
- a disk image is a manifest with exactly one layer; a manifest with several is a container
  image and is skipped (refused when nothing else is left); the layer's digest is the checksum;
- the layer's media type says its compression (a `gzip` / `zstd` suffix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from metalflow.api.agent import WriteImageRequest
from metalflow.api.configdrive import ATTEMPT_PATTERN
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.models import ChecksumType, HostRef, ImageFormat, ImageSpec, Model, RootDeviceHints
from metalflow.api.oci_ref import DIGEST, OciReference

MANIFEST_OCI = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_OCI = "application/vnd.oci.image.index.v1+json"
INDEX_DOCKER = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFESTS = (MANIFEST_OCI, MANIFEST_DOCKER)
INDEXES = (INDEX_OCI, INDEX_DOCKER)
# what a manifest GET asks for: any of the four, so a tag may name an index or a single manifest
ACCEPT = ", ".join((INDEX_OCI, MANIFEST_OCI, INDEX_DOCKER, MANIFEST_DOCKER))

DEFAULT_ARCHITECTURE = "x86_64"
_ARCH_ALIASES = ({"x86_64", "amd64"}, {"aarch64", "arm64"})
# disktype annotation -> (priority when the agent streams, format); lower first (Ironic's order)
_DISKTYPES = {
    "raw": (1, ImageFormat.RAW),
    "applehv": (2, ImageFormat.RAW),
    "qcow2": (3, ImageFormat.QCOW2),
    "qemu": (4, ImageFormat.QCOW2),
}
_NO_DISKTYPE = 100

Compression = Literal["", "gzip"]

OCI_STAGE = "oci.stage"
OCI_REMOVE = "oci.remove"
OCI_PATCH = "deploy-oci-images"


def architectures(arch: str) -> set[str]:
    for names in _ARCH_ALIASES:
        if arch in names:
            return set(names)
    return {arch}


@dataclass(frozen=True)
class Candidate:
    digest: str
    media_type: str
    format: ImageFormat | None  # from the disktype annotation; None: detected from the bytes


def candidates(index: dict[str, Any], ref: OciReference, arch: str) -> list[Candidate]:
    """The index's manifests this host could use, best first (see the module doc)."""
    wanted = architectures(arch or DEFAULT_ARCHITECTURE)
    found: list[tuple[int, int, Candidate]] = []
    seen_archs: list[str] = []
    for n, entry in enumerate(index.get("manifests") or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            continue
        platform_arch = (entry.get("platform") or {}).get("architecture")
        if platform_arch:
            seen_archs.append(platform_arch)
            if platform_arch not in wanted:
                continue
        disktype = (entry.get("annotations") or {}).get("disktype")
        if disktype is None:
            priority, fmt = _NO_DISKTYPE, None
        elif disktype in _DISKTYPES:
            priority, fmt = _DISKTYPES[disktype]
        else:
            continue
        found.append((priority, n, Candidate(entry["digest"], str(entry.get("mediaType") or ""), fmt)))
    if not found:
        have = ", ".join(sorted(set(seen_archs))) or "none usable"
        raise permanent(
            ErrorName.OCI_NOT_FOUND,
            f"image {ref} has no disk image for architecture {arch} (its index lists: {have}); "
            "push one for this platform or fix spec.image.url",
        )
    return [c for _, _, c in sorted(found, key=lambda t: (t[0], t[1]))]


class OciLayer(Model):
    digest: str
    media_type: str
    size_bytes: int
    compression: Compression = ""
    format: ImageFormat | None = None


def _compression(media_type: str, ref: OciReference) -> Compression:
    kind = media_type.lower()
    if kind in ("application/gzip", "application/x-gzip") or kind.endswith(("+gzip", ".gzip", "tar.gzip")):
        return "gzip"
    for other in ("zstd", "xz", "bzip2", "lz4"):
        if kind.endswith(other) or kind in (f"application/{other}", f"application/x-{other}"):
            raise permanent(
                ErrorName.OCI_MEDIA_TYPE,
                f"image {ref}: its layer is {media_type} ({other}), which the agent cannot decompress while "
                "writing; push the disk image uncompressed or gzip-compressed",
            )
    if "nondistributable" in kind or "foreign" in kind:
        raise permanent(
            ErrorName.OCI_MEDIA_TYPE,
            f"image {ref}: its layer is {media_type}, a non-distributable layer the registry does not hold; "
            "push the disk image itself",
        )
    return ""


def disk_layer(manifest: dict[str, Any], ref: OciReference, fmt: ImageFormat | None = None) -> OciLayer:
    """The one layer of a disk-image manifest; a container image (several layers) is refused."""
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise permanent(
            ErrorName.OCI_NOT_DISK_IMAGE,
            f"image {ref} has no layers; push the disk image as a single-layer artefact "
            "(e.g. oras push REGISTRY/REPO:TAG disk.img)",
        )
    if len(layers) > 1:
        raise permanent(
            ErrorName.OCI_NOT_DISK_IMAGE,
            f"image {ref} has {len(layers)} layers: this is a container image, not a disk image; "
            "push the disk image as a single-layer artefact (e.g. oras push REGISTRY/REPO:TAG disk.img)",
        )
    layer = layers[0]
    digest = layer.get("digest") if isinstance(layer, dict) else None
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise permanent(
            ErrorName.OCI_MEDIA_TYPE,
            f"image {ref}: its layer digest {digest!r} is not sha256:<64 hex digits>; push it with sha256",
        )
    media_type = str(layer.get("mediaType") or "application/octet-stream")
    if fmt is None:
        disktype = (manifest.get("annotations") or {}).get("disktype")
        fmt = _DISKTYPES[disktype][1] if disktype in _DISKTYPES else None
    return OciLayer(
        digest=digest,
        media_type=media_type,
        size_bytes=int(layer.get("size") or 0),
        compression=_compression(media_type, ref),
        format=fmt,
    )


def check_manifest_digest(ref: OciReference, asked: str, got: str) -> None:
    """A manifest must hash to the digest it was asked for (the pin is the point) or that the
    registry named for it (Docker-Content-Digest)."""
    if asked.startswith("sha256:") and asked != got:
        raise permanent(
            ErrorName.IMAGE_CHECKSUM,
            f"image {ref}: the registry's manifest {asked} hashes to {got}; the registry or something "
            "between is corrupting it — fix the registry or pin another digest",
        )


# ---- contracts ----
class OciStageRequest(Model):
    host: HostRef
    image: ImageSpec
    architecture: str = DEFAULT_ARCHITECTURE
    attempt: str = Field(default="", pattern=ATTEMPT_PATTERN)


class OciResolved(Model):
    """Which image a tag meant at deploy time: recorded in status so an operator sees what was written."""

    image: str  # the spec's URL
    manifest_digest: str
    pinned_url: str  # oci://registry/repository@<manifest digest>
    layer: OciLayer


class OciStaged(Model):
    """The blob's URL on the boot server (no credential in it) and what it resolved to."""

    url: str
    resolved: OciResolved


class OciRemove(Model):
    host: HostRef
    attempt: str = Field(default="", pattern=ATTEMPT_PATTERN)


def write_request(staged: OciStaged, hints: RootDeviceHints | None) -> WriteImageRequest:
    """What the agent is asked to write: the boot server's URL for the blob, the layer digest as
    its sha256, the format the annotation gave (else detected), the layer's compression."""
    layer = staged.resolved.layer
    return WriteImageRequest(
        image=ImageSpec(
            url=staged.url,
            checksum=layer.digest.removeprefix("sha256:"),
            checksum_type=ChecksumType.SHA256,
            format=layer.format,
        ),
        root_device_hints=hints,
        compression=layer.compression,
    )
