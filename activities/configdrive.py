"""Stage a host's config drive on the boot server (control-plane side).

userData / networkData / metaData are resolved here and go straight into a ConfigDrive v2
ISO (label config-2, openstack/latest/...) built with pycdlib; the agent downloads it by
URL. So secret content travels over the boot network once and never through Temporal: the
workflow only sees the URL (unguessable), its sha256 and size.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets as pysecrets
from pathlib import Path
from typing import Any

import pycdlib
from temporalio import activity

from metalflow.api.configdrive import CONFIGDRIVE_STAGE, ConfigDriveRequest, ConfigDriveStaged
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.models import HostRef, SecretRef
from metalflow.runtime.secrets import load_yaml, resolve, secret_key
from metalflow.runtime.settings import get_settings


def _content(ref: SecretRef | None, key: str) -> tuple[str, str] | None:
    """(the key used, its text): `key`, else the Secret's one `value`."""
    if ref is None:
        return None
    data = resolve(ref).data
    used = key if key in data else "value"
    if used not in data:
        raise permanent(
            ErrorName.SECRET_INVALID, f"{ref.describe()} has neither key {key!r} nor 'value'; add {key!r}"
        )
    return used, data[used]


def _yaml(ref: SecretRef | None, key: str) -> Any:
    """networkData / metaData, parsed (None when absent or empty)."""
    content = _content(ref, key)
    if ref is None or content is None:
        return None
    return load_yaml(content[1], secret_key(ref, content[0]))


def build_iso(files: dict[str, bytes], label: str = "config-2") -> bytes:
    """An ISO 9660 image (Rock Ridge + Joliet names); label config-2 makes it a ConfigDrive v2."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=4, joliet=3, rock_ridge="1.09", vol_ident=label)
    made: set[str] = set()
    for path in sorted(files):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            d = "/".join(parts[:depth])
            if d not in made:
                iso.add_directory(
                    "/" + d.upper().replace("-", "_"), rr_name=parts[depth - 1], joliet_path="/" + d
                )
                made.add(d)
        iso_name = "/" + path.upper().replace("-", "_") + ";1"
        data = files[path]
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=parts[-1], joliet_path="/" + path)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def drive_files(host: HostRef, user_data: str | None, network_data: Any, meta_data: Any) -> dict[str, bytes]:
    """The drive's files; network_data and meta_data as parsed from their YAML/JSON."""
    meta: dict[str, Any] = {
        "uuid": host.host_id,
        "name": host.name,
        "hostname": host.name,
        "local-hostname": host.name,
        "metal3-namespace": host.namespace,
        "metal3-name": host.name,
    }
    if meta_data is not None:
        if not isinstance(meta_data, dict):
            raise permanent(ErrorName.SECRET_INVALID, "metaData must be a YAML/JSON mapping of keys")
        meta.update(meta_data)
    files = {"openstack/latest/meta_data.json": json.dumps(meta, indent=1).encode()}
    if user_data:
        files["openstack/latest/user_data"] = user_data.encode()
    if network_data is not None:
        files["openstack/latest/network_data.json"] = json.dumps(network_data).encode()
    return files


@activity.defn(name=CONFIGDRIVE_STAGE)
def stage_configdrive(req: ConfigDriveRequest) -> ConfigDriveStaged:
    settings = get_settings()
    user_data = _content(req.user_data, "userData")
    files = drive_files(
        req.host,
        user_data[1] if user_data else None,
        _yaml(req.network_data, "networkData"),
        _yaml(req.meta_data, "metaData"),
    )
    image = build_iso(files)
    target_dir = Path(settings.boot_dir) / "configdrive"
    target_dir.mkdir(parents=True, exist_ok=True)
    for old in target_dir.glob(f"{req.host.host_id}-*.iso"):
        old.unlink(missing_ok=True)  # one live drive per host; a retry replaces it
    name = f"{req.host.host_id}-{pysecrets.token_urlsafe(16)}.iso"
    tmp = target_dir / (name + ".tmp")
    tmp.write_bytes(image)
    tmp.chmod(0o644)
    tmp.replace(target_dir / name)
    return ConfigDriveStaged(
        url=f"{settings.boot_server_url.rstrip('/')}/configdrive/{name}",
        sha256=hashlib.sha256(image).hexdigest(),
        size_bytes=len(image),
    )


ACTIVITIES = [stage_configdrive]
