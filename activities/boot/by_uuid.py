"""Network boot of hosts enrolled without a MAC: the per-host script keyed by SMBIOS UUID.

dnsmasq answers an iPXE client it has no host entry for with a generic script URL,
`/by-uuid/${uuid}` (dnsmasq.conf.j2, `uuid_boot`); the boot server (worker/boot_server.py)
serves the script `prepare` wrote under that UUID. The directory is outside the boot server's
static trees: only the by-uuid route reads it, so an unknown UUID is answered, logged and
counted there rather than a bare 404.

Each UUID is claimed by one host (`<uuid>.host` holds its host id, created exclusively): a
second host reporting the same UUID fails with DuplicateSystemUUID naming the first.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from activities.boot import ipxe
from activities.boot.render import write_atomically
from metalflow.api.boot import Architecture, BootPurpose
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.models import HostRef
from metalflow.api.smbios import InvalidSystemUUID, alternates, canonical
from metalflow.runtime.settings import Settings

UUID_DIR = "uuid"


def uuid_dir(boot_dir: Path) -> Path:
    return boot_dir / UUID_DIR


def script_path(boot_dir: Path, system_uuid: str) -> Path:
    return uuid_dir(boot_dir) / f"{system_uuid}.ipxe"


def claim_path(boot_dir: Path, system_uuid: str) -> Path:
    return uuid_dir(boot_dir) / f"{system_uuid}.host"


def claim(boot_dir: Path, system_uuid: str, host: HostRef) -> None:
    """Record that `host` is the machine with this UUID; refuse if another host already is."""
    path = claim_path(boot_dir, system_uuid)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(host.host_id)
    owner = path.read_text().strip()
    if owner != host.host_id:
        raise permanent(
            ErrorName.DUPLICATE_SYSTEM_UUID,
            f"{host.namespace}/{host.name}: its BMC reports system UUID {system_uuid}, which host "
            f"{owner} already claimed; two BareMetalHosts point at one machine (check both "
            "spec.bmc.address values), or give this host its spec.bootMACAddress",
        )


def prepare(
    host: HostRef,
    system_uuid: str,
    purpose: BootPurpose,
    settings: Settings,
    arch: Architecture,
) -> str:
    """Claim the UUID and write the host's script under it; the script's URL."""
    try:
        value = canonical(system_uuid)
    except InvalidSystemUUID as err:
        raise permanent(ErrorName.INVALID_SPEC, f"{host.namespace}/{host.name}: {err}") from None
    claim(settings.boot_dir, value, host)
    text = ipxe.script(host, "", purpose, settings, arch, system_uuid=value)
    write_atomically(script_path(settings.boot_dir, value), text)
    return f"{settings.boot_server_url.rstrip('/')}/by-uuid/{value}"


def release(boot_dir: Path, host: HostRef, claims: bool = False) -> bool:
    """Remove the scripts of `host` (boot cleanup: it boots its own disk now) and, with `claims`,
    its UUID claims too (the host is deleted); whether any was there. A claim outlives the
    scripts so that a second host pointing at the same machine is refused while the first exists."""
    found = False
    directory = uuid_dir(boot_dir)
    for path in sorted(directory.glob("*.host")) if directory.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text().strip() != host.host_id:
                continue
            script_path(boot_dir, path.stem).unlink(missing_ok=True)
            if claims:
                path.unlink()
            found = True
    return found


def lookup(boot_dir: Path, requested: str) -> tuple[Path | None, str, list[str]]:
    """The script for the UUID iPXE sent: (path or None, the UUID it was found under, the
    hosts that claim any encoding of it). The exact UUID wins; otherwise one alternate encoding
    (metalflow.api.smbios.alternates) claimed by exactly one host. Raises InvalidSystemUUID."""
    value = canonical(requested)
    exact = script_path(boot_dir, value)
    if exact.is_file():
        return exact, value, [_owner(boot_dir, value)]
    found = [(alt, script_path(boot_dir, alt)) for alt in alternates(value)]
    found = [(alt, path) for alt, path in found if path.is_file()]
    owners = [_owner(boot_dir, alt) for alt, _ in found]
    if len(found) == 1:
        return found[0][1], found[0][0], owners
    return None, value, owners


def _owner(boot_dir: Path, system_uuid: str) -> str:
    try:
        return claim_path(boot_dir, system_uuid).read_text().strip()
    except FileNotFoundError:
        return ""
