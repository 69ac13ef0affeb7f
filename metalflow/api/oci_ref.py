"""The `oci://` image URL (pure; models.ImageSpec checks it with this, metalflow.api.oci uses it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The distribution spec's grammar (reference.go): path components, a tag, a digest.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_REGISTRY = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@dataclass(frozen=True)
class OciReference:
    registry: str  # host[:port], as in the URL
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """What the manifest endpoint is asked for: the pinned digest, else the tag."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> str:
        return f"oci://{self.registry}/{self.repository}@{digest}"

    def __str__(self) -> str:
        tail = f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}"
        return f"oci://{self.registry}/{self.repository}{tail}"


def parse_oci_url(url: str) -> OciReference:
    """`oci://host[:port]/path/name[:tag][@sha256:<64 hex>]`; a ValueError names the part that is wrong."""
    if not url.startswith("oci://"):
        raise ValueError(f"image.url {url!r} is not an oci:// URL")
    rest = url[len("oci://") :]
    registry, _, path = rest.partition("/")
    if not registry or not _REGISTRY.fullmatch(registry):
        raise ValueError(f"image.url {url!r} has no registry host; write oci://HOST[:PORT]/REPOSITORY[:TAG]")
    digest = None
    if "@" in path:
        path, _, digest = path.partition("@")
        path = path.removesuffix(":")  # Ironic's documentation writes `name:@sha256:...`
        if not DIGEST.fullmatch(digest):
            raise ValueError(
                f"image.url {url!r}: {digest!r} is not a sha256 digest; pin with @sha256:<64 hex digits>"
            )
    tag = None
    name, colon, maybe_tag = path.rpartition(":")
    if colon:
        path, tag = name, maybe_tag
        if not _TAG.fullmatch(tag):
            raise ValueError(f"image.url {url!r}: tag {tag!r} is not a valid tag (letters, digits, . _ -)")
    if not path or not _REPOSITORY.fullmatch(path):
        raise ValueError(
            f"image.url {url!r}: repository {path!r} must be lower-case path components "
            "(letters, digits, . _ -) separated by /"
        )
    return OciReference(registry=registry, repository=path, tag=tag, digest=digest)
