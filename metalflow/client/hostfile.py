"""Hostfiles for scripts: the same BareMetalHost (and Secret) manifests metal3 takes.

Secrets in the file, or in `--secrets-dir`, stay on the local disk (mode 0600) and the hosts
refer to them by path; the worker reads them when an activity needs them. Without a local
copy, a Secret name refers to the Kubernetes Secret of that name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from metalflow.api.bmh import (
    HFC_KIND,
    HFS_KIND,
    HUP_KIND,
    KIND,
    ManifestError,
    firmware_settings_from_manifest,
    firmware_updates_from_manifest,
    host_from_manifest,
    update_policy_from_manifest,
)
from metalflow.api.models import Host, HostSpec


def _secret_target(obj: dict[str, Any], secrets_dir: Path) -> Path:
    meta = obj.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not name:
        raise ManifestError("a Secret in the hostfile has no metadata.name; name it")
    return secrets_dir / namespace / f"{name}.yaml"


def _store_secret(obj: dict[str, Any], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump({k: obj[k] for k in ("kind", "data", "stringData") if k in obj}, f)
    tmp.replace(target)


# The kinds metal3 keeps beside a BareMetalHost, under its name: how each is read, and the
# HostSpec field it fills.
RELATED: dict[str, tuple[Callable[[dict[str, Any]], tuple[str, str, Any]], str]] = {
    HFS_KIND: (firmware_settings_from_manifest, "firmware_settings"),
    HFC_KIND: (firmware_updates_from_manifest, "firmware_updates"),
    HUP_KIND: (update_policy_from_manifest, "update_policy"),
}


def _attach_related(hosts: list[Host], items: list[dict[str, Any]], path: Path) -> None:
    """Each HostFirmwareSettings, HostFirmwareComponents and HostUpdatePolicy of the file onto
    the host of its namespace and name; one naming no host of the file is an error."""
    by_ref = {(h.ref.namespace, h.ref.name): h for h in hosts}
    for obj in items:
        kind = obj.get("kind")
        if kind not in RELATED:
            continue
        parse, field = RELATED[kind]
        namespace, name, value = parse(obj)
        host = by_ref.get((namespace, name))
        if host is None:
            raise ManifestError(
                f"{path}: {kind} {namespace}/{name} names no {KIND} in the file; "
                "give it the name and namespace of its host"
            )
        host.spec = host.spec.model_copy(update={field: value})


def load_hosts(path: Path, secrets_dir: Path, check: Callable[[HostSpec], None] | None = None) -> list[Host]:
    """Parse a hostfile. Every host is validated (and `check`ed) before the file's Secrets are
    stored under `secrets_dir`: a rejected hostfile leaves nothing behind."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as err:
        raise ManifestError(f"{path} is not valid YAML: {err}") from None
    items: list[dict[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise ManifestError(f"{path} holds a document that is not a mapping: {str(doc)[:60]!r}")
        if doc.get("kind") == "List":
            items.extend(doc.get("items") or [])
        else:
            items.append(doc)
    secrets = {_secret_target(o, secrets_dir): o for o in items if o.get("kind") == "Secret"}

    def locate(namespace: str, name: str) -> str | None:
        for candidate in (secrets_dir / namespace / f"{name}.yaml", secrets_dir / f"{name}.yaml"):
            if candidate in secrets or candidate.exists():
                return str(candidate.resolve())
        return None

    hosts = [host_from_manifest(o, locate) for o in items if o.get("kind") == KIND]
    if not hosts:
        raise ManifestError(f"{path} holds no {KIND} documents")
    _attach_related(hosts, items, path)
    seen: dict[str, str] = {}
    for host in hosts:
        key = host.ref.workflow_id
        if key in seen:
            raise ManifestError(f"{path} names host {host.ref.namespace}/{host.ref.name} twice")
        seen[key] = key
        mac = host.spec.boot_mac_address
        if mac:
            owner = seen.get(mac)
            if owner:
                raise ManifestError(
                    f"bootMACAddress {mac} is used by both {owner} and {key}; each NIC boots one host"
                )
            seen[mac] = key
    if check is not None:
        for host in hosts:
            check(host.spec)
    for target, obj in secrets.items():
        _store_secret(obj, target)
    return hosts
