"""BareMetalHost manifests (metal3.io/v1alpha1) <-> metalflow's Host.

Used by the CLI for hostfiles and by the Kubernetes bridge, so a metal3 manifest means the
same thing on both paths. Secret names become `SecretRef`s; only a local-file mapping (for
scripts) turns them into paths. Values are never read here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from metalflow.api.firmware import desired_values
from metalflow.api.firmware_components import FirmwareUpdate
from metalflow.api.kube_names import BMH_KIND as KIND
from metalflow.api.kube_names import HFC_KIND as HFC_KIND
from metalflow.api.kube_names import HFS_KIND as HFS_KIND
from metalflow.api.kube_names import HUP_KIND as HUP_KIND
from metalflow.api.kube_names import METAL3_API_VERSION as API_VERSION
from metalflow.api.models import Host, HostRef, HostSpec, HostUpdatePolicy, InspectionMode, SecretRef
from metalflow.api.validation import SpecError, spec_problems

# Fields of BareMetalHost.spec that are not the host's spec: metal3's webhook refuses `firmware`.
FIRMWARE_REFUSED = "the Firmware field is no longer supported, use HostFirmwareSettings resource instead"
INSPECT_ANNOTATION = "inspect.metal3.io"
HARDWARE_DETAILS_ANNOTATION = "inspect.metal3.io/hardwaredetails"
REBOOT_ANNOTATION = "reboot.metal3.io"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")

SecretLocator = Callable[[str, str], str | None]
"""(namespace, name) -> local file holding that Secret's keys, or None for a Kubernetes Secret."""


class ManifestError(ValueError):
    """A manifest metalflow cannot use; the message names the field."""


class HostNeedsBMC(ManifestError):
    """A BareMetalHost without spec.bmc: accepted (as metal3 does) and left waiting for one.

    metal3 shows such a host as provisioning state `unmanaged`, operationalStatus `discovered`;
    the bridge writes the same status and starts nothing until spec.bmc is set.
    """


def _ref(name: str, namespace: str, locate: SecretLocator | None) -> SecretRef:
    return SecretRef(name=name, namespace=namespace, path=locate(namespace, name) if locate else None)


def _secret_ref(value: Any, namespace: str, field: str, locate: SecretLocator | None) -> SecretRef:
    if not isinstance(value, dict) or not value.get("name"):
        raise ManifestError(f"spec.{field} must be {{name: <secret>, namespace: <ns>}}")
    if value.get("namespace") and value["namespace"] != namespace:
        # metal3's webhook: validateCrossNamespaceSecretReferences
        raise ManifestError(f"spec.{field}: cross-namespace Secret references are not allowed")
    return _ref(value["name"], value.get("namespace") or namespace, locate)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    """A field that must be a mapping; a placeholder (`spec: ...`) is named, not a crash."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ManifestError(
            f"{where} must be a mapping of fields, got {type(value).__name__} {str(value)[:40]!r}; "
            f"write the fields under {where} (or leave it out)"
        )
    return dict(value)


def _check_annotations(meta: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """metal3's webhook rules on the annotations it reads (validateAnnotations, validateInspectionMode)."""
    problems: list[str] = []
    annotations = _mapping(meta.get("annotations"), "metadata.annotations")
    inspect = annotations.get(INSPECT_ANNOTATION)
    mode = spec.get("inspectionMode")
    if inspect is not None and inspect not in ("disabled", ""):
        problems.append(
            f"metadata.annotations[{INSPECT_ANNOTATION}]: invalid value for the {INSPECT_ANNOTATION} "
            'annotation, allowed are "disabled" or ""'
        )
    if inspect and mode and (inspect == "disabled") != (mode == "disabled"):
        problems.append(
            "spec.inspectionMode: inspect.metal3.io annotation and inspectionMode field "
            "have contradicting values"
        )
    if annotations.get(HARDWARE_DETAILS_ANNOTATION) and not (inspect == "disabled" or mode == "disabled"):
        problems.append(
            f"metadata.annotations[{HARDWARE_DETAILS_ANNOTATION}]: when hardware details are provided, "
            "inspection must be disabled (either via inspect.metal3.io annotation or inspectionMode field)"
        )
    for key, value in annotations.items():
        if (key == REBOOT_ANNOTATION or key.startswith(REBOOT_ANNOTATION + "/")) and value:
            try:
                mode_value = json.loads(value).get("mode", "")
            except (ValueError, AttributeError):
                problems.append(
                    f"metadata.annotations[{key}]: failed to unmarshal the data from the "
                    "reboot.metal3.io annotation"
                )
                continue
            if mode_value not in ("hard", "soft", ""):
                problems.append(
                    f"metadata.annotations[{key}]: invalid mode in the reboot.metal3.io annotation, "
                    'allowed are "hard", "soft" or ""'
                )
    return problems


def host_from_manifest(obj: dict[str, Any], locate: SecretLocator | None = None) -> Host:
    """Convert one BareMetalHost object (as parsed YAML/JSON) into a Host.

    Rejects what metal3's CRD schema rejects (and the webhook's manifest-level rules: firmware,
    annotations, cross-namespace Secrets, UUID names), with their reason and the field;
    `HostNeedsBMC` for a host without spec.bmc. An unknown field is an error naming it, as
    `kubectl apply` (strict field validation) reports it. The spec-level webhook rules are
    `validation.spec_problems`; `admit` runs both.
    """
    if obj.get("kind") != KIND:
        raise ManifestError(f"expected kind {KIND}, got {obj.get('kind')!r}")
    meta = _mapping(obj.get("metadata"), "metadata")
    namespace = meta.get("namespace") or "default"
    name = meta.get("name")
    if not name:
        raise ManifestError("metadata.name is required")
    if _UUID.match(str(name)):
        raise ManifestError("metadata.name: BareMetalHost resource name cannot be a UUID")
    raw = _mapping(obj.get("spec"), "spec")
    problems = _check_annotations(meta, raw)
    if raw.get("firmware") is not None:
        problems.append(f"spec.firmware: {FIRMWARE_REFUSED}")
    raw.pop("firmware", None)
    for field_name, alias, kind in (
        ("firmwareSettings", "firmware_settings", HFS_KIND),
        ("updatePolicy", "update_policy", HUP_KIND),
        ("firmwareUpdates", "firmware_updates", HFC_KIND),
    ):  # HostSpec fields that metal3 keeps in objects of their own
        if field_name in raw or alias in raw:
            problems.append(
                f"spec.{field_name}: unknown field; it goes in a {kind} object with the host's name "
                "(metal3.io/v1alpha1)"
            )
    if problems:
        raise ManifestError(f"BareMetalHost {namespace}/{name} is invalid: " + "; ".join(problems))
    if "bmc" not in raw:
        raise HostNeedsBMC(
            f"BareMetalHost {namespace}/{name} has no spec.bmc: it waits (unmanaged) until "
            "spec.bmc.address and spec.bmc.credentialsName are set"
        )
    if "online" not in raw:
        raise ManifestError(
            "spec.online: Required value (metal3's CRD requires it; write online: true or false)"
        )
    annotations = meta.get("annotations") or {}
    if annotations.get(INSPECT_ANNOTATION) == "disabled" and not raw.get("inspectionMode"):
        raw["inspectionMode"] = InspectionMode.DISABLED.value  # metal3: either form disables inspection
    bmc = _mapping(raw.get("bmc"), "spec.bmc")
    if not bmc.get("address"):
        raise ManifestError(
            "spec.bmc.address: Required value (the BMC's URL, e.g. redfish://10.0.0.5/redfish/v1/Systems/1)"
        )
    credentials_name = bmc.pop("credentialsName", None)
    if not credentials_name:
        raise ManifestError(
            "spec.bmc.credentialsName is required: the Secret with the BMC username and password"
        )
    bmc["credentials"] = _ref(credentials_name, namespace, locate)
    raw["bmc"] = bmc
    for field_name in ("userData", "networkData", "metaData"):
        if raw.get(field_name) is not None:
            raw[field_name] = _secret_ref(raw[field_name], namespace, field_name, locate)
    if raw.get("join") is not None:  # metalflow's: the target cluster's kubeconfig Secret
        join = dict(_mapping(raw["join"], "spec.join"))
        ref = join.get("kubeconfig")
        if ref is not None and not (isinstance(ref, dict) and ref.get("path")):  # a local file is kept
            join["kubeconfig"] = _secret_ref(ref, namespace, "join.kubeconfig", locate)
        raw["join"] = join
    if raw.get("image") is not None:
        raw["image"] = _mapping(raw["image"], "spec.image")
        if not raw["image"].get("url"):
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
    spec = host.spec.model_dump(
        mode="json",
        by_alias=True,
        exclude_none=True,
        exclude={"labels", "join", "firmware_settings", "update_policy", "firmware_updates"},
    )
    creds = spec["bmc"].pop("credentials")
    spec["bmc"]["credentialsName"] = creds["name"]
    for ref in ("userData", "networkData", "metaData"):
        if ref in spec:
            spec[ref] = {"name": spec[ref]["name"], "namespace": spec[ref]["namespace"]}
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


@dataclass
class Verdict:
    """metal3's admission verdict for one BareMetalHost, as `metalflow validate` reports it."""

    name: str
    namespace: str
    accepted: bool
    reasons: list[str] = field(default_factory=list)
    waiting: str = ""  # accepted, but nothing happens until this is fixed (no spec.bmc)
    host: Host | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "verdict": "accepted" if self.accepted else "rejected",
            "reasons": list(self.reasons),
        }
        if self.waiting:
            out["waiting"] = self.waiting
        if self.host is not None:
            out["spec"] = manifest_from_host(self.host)["spec"]
            if self.host.spec.join is not None:  # metalflow's addition, kept too
                out["spec"]["join"] = self.host.spec.join.model_dump(mode="json", by_alias=True)
        return out


def admit(obj: dict[str, Any], locate: SecretLocator | None = None) -> Verdict:
    """The verdict metal3's CRD schema and webhook give this object, with metalflow's reading of it."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "default")
    try:
        host = host_from_manifest(obj, locate)
    except HostNeedsBMC as err:
        return Verdict(name, namespace, True, waiting=str(err))
    except ManifestError as err:
        prefix = f"BareMetalHost {namespace}/{name} is invalid: "
        message = str(err)
        reasons = message.removeprefix(prefix).split("; ") if message.startswith(prefix) else [message]
        return Verdict(name, namespace, False, reasons)
    try:
        problems = spec_problems(host.spec, namespace=namespace)
    except SpecError as err:
        problems = [str(err)]
    return Verdict(name, namespace, not problems, problems, host=host)


def firmware_settings_from_manifest(obj: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """(namespace, name, desired settings as text) of one HostFirmwareSettings object; it
    belongs to the BareMetalHost of the same namespace and name, as in metal3."""
    meta = _mapping(obj.get("metadata"), "metadata")
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not name:
        raise ManifestError(f"a {HFS_KIND} has no metadata.name; give it its host's name")
    spec = _mapping(obj.get("spec"), f"{HFS_KIND} {namespace}/{name} spec")
    settings = spec.get("settings")
    if settings is None:
        settings = {}
    if isinstance(settings, list) and all(isinstance(i, dict) and len(i) == 1 for i in settings):
        first = next(iter(settings[0].items()), ("ProcVirtualization", "Enabled"))
        raise ManifestError(
            f"{HFS_KIND} {namespace}/{name}: spec.settings is a list of one-entry maps (as upstream's "
            "sample writes it), which metal3's CRD refuses; write it as one map, e.g. "
            f"`settings: {{{first[0]}: {first[1]}}}`"
        )
    if not isinstance(settings, dict):
        raise ManifestError(f"{HFS_KIND} {namespace}/{name}: spec.settings must be a map of name: value")
    bad = [k for k, v in settings.items() if isinstance(v, dict | list)]
    if bad:
        raise ManifestError(
            f"{HFS_KIND} {namespace}/{name}: spec.settings.{bad[0]} must be a string or an integer"
        )
    return namespace, str(name), desired_values(settings)


def update_policy_from_manifest(obj: dict[str, Any]) -> tuple[str, str, HostUpdatePolicy]:
    """(namespace, name, spec) of one HostUpdatePolicy; it governs the host of its name."""
    meta = _mapping(obj.get("metadata"), "metadata")
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not name:
        raise ManifestError(f"a {HUP_KIND} has no metadata.name; give it its host's name")
    try:
        policy = HostUpdatePolicy.model_validate(obj.get("spec") or {})
    except ValidationError as err:
        raise ManifestError(_explain(err, f"{HUP_KIND} {namespace}/{name}")) from None
    return namespace, str(name), policy


def firmware_updates_from_manifest(obj: dict[str, Any]) -> tuple[str, str, list[FirmwareUpdate]]:
    """(namespace, name, spec.updates) of one HostFirmwareComponents; it belongs to the host of
    its name."""
    meta = _mapping(obj.get("metadata"), "metadata")
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not name:
        raise ManifestError(f"a {HFC_KIND} has no metadata.name; give it its host's name")
    spec = _mapping(obj.get("spec"), f"{HFC_KIND} {namespace}/{name} spec")
    raw = spec.get("updates") or []
    if not isinstance(raw, list):
        raise ManifestError(
            f"{HFC_KIND} {namespace}/{name}: spec.updates must be a list of {{component, url}}"
        )
    updates = []
    for i, item in enumerate(raw):
        if isinstance(item, dict) and "name" in item and "component" not in item:
            raise ManifestError(
                f"{HFC_KIND} {namespace}/{name}: spec.updates[{i}] has `name`, which is not a field "
                f"(upstream's sample writes it); write `component: {item['name']}`"
            )
        try:
            updates.append(FirmwareUpdate.model_validate(item))
        except ValidationError as err:
            reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise ManifestError(f"{HFC_KIND} {namespace}/{name}: spec.updates[{i}]: {reason}") from None
    return namespace, str(name), updates
