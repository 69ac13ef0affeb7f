"""Stage a host's config drive on the boot server (control-plane side).

userData / networkData / metaData are resolved here and go straight into a ConfigDrive v2
ISO (label config-2, openstack/latest/...) built with pycdlib; the agent downloads it by
URL. So secret content travels over the boot network once and never through Temporal: the
workflow only sees the URL, its sha256 and size.

The URL is a plain address: the boot server serves the drive only to a request carrying the
host's current agent token (activities/boot/agent_tokens.py), which only the booted ramdisk
holds. A drive lives only as long as its deploy attempt: `configdrive/<host id>/<attempt>.iso`,
staged again under the same name when the attempt's staging is retried, removed when the
attempt ends and (every drive of the host) on deprovision.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pycdlib
from temporalio import activity

from metalflow.api.configdrive import (
    CONFIGDRIVE_REMOVE,
    CONFIGDRIVE_STAGE,
    NETWORK_DATA_CHECK,
    ConfigDriveRemove,
    ConfigDriveRequest,
    ConfigDriveStaged,
    NetworkDataCheck,
    network_data_mac_problems,
)
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.models import HostRef, SecretRef
from metalflow.runtime.secrets import load_yaml, resolve, secret_key
from metalflow.runtime.settings import Settings, get_settings


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


def _drives(settings: Settings) -> Path:
    return Path(settings.boot_dir) / "configdrive"


def _remove_legacy(drives: Path, host: HostRef) -> None:
    """The host's drive from before per-attempt names: `<host id>-<22-char token>.iso` (exactly:
    host fl-1 must not take fl-10's)."""
    legacy = re.compile(re.escape(host.host_id) + r"-[A-Za-z0-9_-]{22}\.iso")
    for path in drives.glob("*.iso"):
        if legacy.fullmatch(path.name):
            path.unlink(missing_ok=True)


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
    attempt = req.attempt or activity.info().workflow_run_id
    drives = _drives(settings)
    host_dir = drives / req.host.host_id
    host_dir.mkdir(parents=True, exist_ok=True)
    _remove_legacy(drives, req.host)
    for old in host_dir.glob(f"{attempt}.*.iso"):  # named with a bearer part before agent tokens
        old.unlink(missing_ok=True)
    name = f"{attempt}.iso"  # a retried staging of the same attempt keeps the name
    tmp = host_dir / (name + ".tmp")
    tmp.write_bytes(image)
    tmp.chmod(0o644)
    tmp.replace(host_dir / name)
    return ConfigDriveStaged(
        url=f"{settings.agent_boot_server}/configdrive/{req.host.host_id}/{name}",
        sha256=hashlib.sha256(image).hexdigest(),
        size_bytes=len(image),
    )


@activity.defn(name=NETWORK_DATA_CHECK)
def check_network_data(req: NetworkDataCheck) -> None:
    """Before the deploy writes anything: spec.networkData's NICs are this host's."""
    problems = network_data_mac_problems(_yaml(req.network_data, "networkData"), req.macs)
    if problems:
        raise permanent(ErrorName.NETWORK_DATA_MAC, f"{req.network_data.describe()}: " + "; ".join(problems))


@activity.defn(name=CONFIGDRIVE_REMOVE)
def remove_configdrives(req: ConfigDriveRemove) -> None:
    """Take an attempt's drive (or every drive of the host) off the boot server; idempotent."""
    drives = _drives(get_settings())
    host_dir = drives / req.host.host_id
    if req.attempt:
        for path in host_dir.glob(f"{req.attempt}.*"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # gone, or another attempt's drive still there
            host_dir.rmdir()
    else:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(host_dir)
        _remove_legacy(drives, req.host)


ACTIVITIES = [stage_configdrive, check_network_data, remove_configdrives]
