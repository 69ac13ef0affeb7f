"""BareMetalHost manifests (metal3.io/v1alpha1) <-> metalflow's Host.

Used by the CLI for hostfiles and by the Kubernetes bridge, so a metal3 manifest means the
same thing on both paths. Secret names become `SecretRef`s; only a local-file mapping (for
scripts) turns them into paths. Values are never read here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from metalflow.api.kube_names import BMH_KIND as KIND
from metalflow.api.kube_names import METAL3_API_VERSION as API_VERSION
from metalflow.api.models import Host, HostRef, HostSpec, SecretRef

# metal3 spec fields metalflow accepts but does not act on (yet): kept out of HostSpec.
IGNORED_SPEC_FIELDS = frozenset(
    {
        "raid",
        "firmware",
        "hardwareProfile",
        "customDeploy",
        "preprovisioningNetworkDataName",
        "architecture",
        "taints",
        "bmcEventSubscriptions",
        "hardwareData",
    }
)

SecretLocator = Callable[[str, str], str | None]
"""(namespace, name) -> local file holding that Secret's keys, or None for a Kubernetes Secret."""


class ManifestError(ValueError):
    """A manifest metalflow cannot use; the message names the field."""


def _ref(name: str, namespace: str, locate: SecretLocator | None) -> SecretRef:
    return SecretRef(name=name, namespace=namespace, path=locate(namespace, name) if locate else None)


def _secret_ref(value: Any, namespace: str, field: str, locate: SecretLocator | None) -> SecretRef:
    if not isinstance(value, dict) or not value.get("name"):
        raise ManifestError(f"spec.{field} must be {{name: <secret>, namespace: <ns>}}")
    return _ref(value["name"], value.get("namespace") or namespace, locate)


def host_from_manifest(obj: dict[str, Any], locate: SecretLocator | None = None) -> Host:
    """Convert one BareMetalHost object (as parsed YAML/JSON) into a Host."""
    if obj.get("kind") != KIND:
        raise ManifestError(f"expected kind {KIND}, got {obj.get('kind')!r}")
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    name = meta.get("name")
    if not name:
        raise ManifestError("metadata.name is required")
    raw = dict(obj.get("spec") or {})
    for key in IGNORED_SPEC_FIELDS:
        raw.pop(key, None)
    bmc = dict(raw.get("bmc") or {})
    credentials_name = bmc.pop("credentialsName", None)
    if not credentials_name:
        raise ManifestError(
            "spec.bmc.credentialsName is required: the Secret with the BMC username and password"
        )
    bmc["credentials"] = _ref(credentials_name, namespace, locate)
    raw["bmc"] = bmc
    for field in ("userData", "networkData", "metaData"):
        if raw.get(field) is not None:
            raw[field] = _secret_ref(raw[field], namespace, field, locate)
    if raw.get("image") is not None and not raw["image"].get("url"):
        raw["image"] = None  # metal3 treats an image with an empty url as no image
    if raw.get("image") is not None and raw["image"].get("ociAuthSecretName"):
        image = dict(raw["image"])  # the registry credentials: a dockerconfigjson Secret, by reference
        image["ociAuth"] = _ref(image.pop("ociAuthSecretName"), namespace, locate)
        raw["image"] = image
    raw["labels"] = dict(meta.get("labels") or {})
    try:
        spec = HostSpec.model_validate(raw)
        ref = HostRef(namespace=namespace, name=name)
    except ValidationError as err:
        raise ManifestError(_explain(err, f"BareMetalHost {namespace}/{name}")) from None
    return Host(ref=ref, spec=spec)


def _explain(err: ValidationError, what: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        lines.append(f"spec.{loc}: {e['msg']}")
    return f"{what} is invalid: " + "; ".join(lines)


def manifest_from_host(host: Host) -> dict[str, Any]:
    """The BareMetalHost a Host corresponds to (for `metalflow hosts -o yaml` and tests)."""
    spec = host.spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"labels", "join"})
    creds = spec["bmc"].pop("credentials")
    spec["bmc"]["credentialsName"] = creds["name"]
    for field in ("userData", "networkData", "metaData"):
        if field in spec:
            spec[field] = {"name": spec[field]["name"], "namespace": spec[field]["namespace"]}
    if "ociAuth" in spec.get("image", {}):
        spec["image"]["ociAuthSecretName"] = spec["image"].pop("ociAuth")["name"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": host.ref.name,
            "namespace": host.ref.namespace,
            "labels": dict(host.spec.labels),
        },
        "spec": spec,
    }
