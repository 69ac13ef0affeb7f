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


def _attach_firmware_settings(hosts: list[Host], objs: list[dict[str, Any]], path: Path) -> None:
    """Each HostFirmwareSettings object's settings onto the host of its namespace and name."""
    by_ref = {(h.ref.namespace, h.ref.name): h for h in hosts}
    for obj in objs:
        namespace, name, settings = firmware_settings_from_manifest(obj)
        host = by_ref.get((namespace, name))
        if host is None:
            raise ManifestError(
                f"{path}: {HFS_KIND} {namespace}/{name} names no {KIND} in the file; "
                "give it the name and namespace of the host it configures"
            )
        host.spec = host.spec.model_copy(update={"firmware_settings": settings})


def _attach_update_policies(hosts: list[Host], objs: list[dict[str, Any]], path: Path) -> None:
    """Each HostUpdatePolicy onto the host of its namespace and name."""
    by_ref = {(h.ref.namespace, h.ref.name): h for h in hosts}
    for obj in objs:
        namespace, name, policy = update_policy_from_manifest(obj)
        host = by_ref.get((namespace, name))
        if host is None:
            raise ManifestError(
                f"{path}: {HUP_KIND} {namespace}/{name} names no {KIND} in the file; "
                "give it the name and namespace of the host it governs"
            )
        host.spec = host.spec.model_copy(update={"update_policy": policy})


def _attach_firmware_updates(hosts: list[Host], objs: list[dict[str, Any]], path: Path) -> None:
    """Each HostFirmwareComponents' updates onto the host of its namespace and name."""
    by_ref = {(h.ref.namespace, h.ref.name): h for h in hosts}
    for obj in objs:
        namespace, name, updates = firmware_updates_from_manifest(obj)
        host = by_ref.get((namespace, name))
        if host is None:
            raise ManifestError(
                f"{path}: {HFC_KIND} {namespace}/{name} names no {KIND} in the file; "
                "give it the name and namespace of the host it updates"
            )
        host.spec = host.spec.model_copy(update={"firmware_updates": updates})


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
    _attach_firmware_settings(hosts, [o for o in items if o.get("kind") == HFS_KIND], path)
    _attach_update_policies(hosts, [o for o in items if o.get("kind") == HUP_KIND], path)
    _attach_firmware_updates(hosts, [o for o in items if o.get("kind") == HFC_KIND], path)
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
