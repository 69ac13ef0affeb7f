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
import yaml
from temporalio import activity

from metalflow.api.configdrive import CONFIGDRIVE_STAGE, ConfigDriveRequest, ConfigDriveStaged
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.models import HostRef, SecretRef
from metalflow.runtime.secrets import resolve
from metalflow.runtime.settings import get_settings


def _content(ref: SecretRef | None, key: str) -> str | None:
    if ref is None:
        return None
    data = resolve(ref).data
    value = data.get(key, data.get("value"))
    if value is None:
        raise permanent(
            ErrorName.SECRET_INVALID, f"{ref.describe()} has neither key {key!r} nor 'value'; add {key!r}"
        )
    return value


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


def drive_files(
    host: HostRef, user_data: str | None, network_data: str | None, meta_data: str | None
) -> dict[str, bytes]:
    meta: dict[str, Any] = {
        "uuid": host.host_id,
        "name": host.name,
        "hostname": host.name,
        "local-hostname": host.name,
        "metal3-namespace": host.namespace,
        "metal3-name": host.name,
    }
    if meta_data:
        extra = yaml.safe_load(meta_data)
        if not isinstance(extra, dict):
            raise permanent(ErrorName.SECRET_INVALID, "metaData must be a YAML/JSON mapping of keys")
        meta.update(extra)
    files = {"openstack/latest/meta_data.json": json.dumps(meta, indent=1).encode()}
    if user_data:
        files["openstack/latest/user_data"] = user_data.encode()
    if network_data:
        parsed = yaml.safe_load(network_data)
        files["openstack/latest/network_data.json"] = json.dumps(parsed).encode()
    return files


@activity.defn(name=CONFIGDRIVE_STAGE)
def stage_configdrive(req: ConfigDriveRequest) -> ConfigDriveStaged:
    settings = get_settings()
    files = drive_files(
        req.host,
        _content(req.user_data, "userData"),
        _content(req.network_data, "networkData"),
        _content(req.meta_data, "metaData"),
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
