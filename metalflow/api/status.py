"""metal3's status conditions, derived from a host's status (pure: no clock, no I/O).

metal3 (baremetal-operator, apis/metal3.io/v1alpha1/baremetalhost_types.go) reports
`Manageable`, `Provisioned` and `Ready` conditions as Kubernetes `metav1.Condition`s. metalflow
derives the same three from the state it already keeps. The transition time is the status's
`lastUpdated` (metalflow does not keep a per-condition history yet).
"""

from __future__ import annotations

from typing import Any

from metalflow.api.models import HostStatus, OperationalStatus, ProvisioningState

S = ProvisioningState

_UNMANAGED = {S.NONE, S.UNMANAGED, S.REGISTERING}
_PROVISIONED = {S.PROVISIONED, S.EXTERNALLY_PROVISIONED}


def _reason(state: ProvisioningState) -> str:
    """A condition reason (CamelCase, as metal3's schema's pattern wants) from a state name."""
    return "".join(word.capitalize() for word in (state.value or "unmanaged").split())


def metal3_conditions(status: HostStatus) -> list[dict[str, Any]]:
    """Conditions for `status.conditions`; empty until the status has a lastUpdated time."""
    if status.last_updated is None:
        return []
    when = status.last_updated.isoformat().replace("+00:00", "Z")
    state = status.provisioning.state
    error = status.operational_status == OperationalStatus.ERROR

    def cond(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": "True" if ok else "False",
            "reason": reason,
            "message": message,
            "lastTransitionTime": when,
        }

    manageable = state not in _UNMANAGED
    provisioned = state in _PROVISIONED
    return [
        cond(
            "Manageable",
            manageable,
            "Manageable" if manageable else ("Registering" if state == S.REGISTERING else "NotManaged"),
            "the BMC is registered" if manageable else f"the host is {state.value or 'not registered'}",
        ),
        cond(
            "Provisioned",
            provisioned,
            "Provisioned" if provisioned else "NotProvisioned",
            f"provisioning state {state.value or 'none'}",
        ),
        cond(
            "Ready",
            not error and state in (S.AVAILABLE, *_PROVISIONED),
            "Error" if error else _reason(state),
            status.error_message if error else f"provisioning state {state.value or 'none'}",
        ),
    ]


# metalflow's own fields are not part of metal3's status schema.
# Three extensions are written, each only when set: provisioning.imageDigest (oci:// images),
# erasure (spec.erase's per-disk record) and node (the Node a host joined as); metalflow's CRD
# keeps them, an API server serving upstream's CRD prunes them (does not refuse the document).
# Paths from the status root.
METAL3_EXTENSIONS: tuple[tuple[str, ...], ...] = (("provisioning", "imageDigest"), ("erasure",), ("node",))
_METALFLOW_ONLY = {
    "bmc_driver",
    "system_uuid",
    "current_step",
    "paused",
    "detached",
    "deleted",
    "firmware_settings",  # HostFirmwareSettings status, not the BareMetalHost's
    "firmware_components",  # HostFirmwareComponents status
    "security_events",  # refused agent replies: the status query, the CLI, the logs and metrics
}


def bmh_status(status: HostStatus) -> dict[str, Any]:
    """The metal3-shaped status document (camelCase, metal3 fields only), as metal3 writes it.

    Enum fields with no value are omitted, never "" (metal3's CRD rejects an empty errorType),
    and so are hardware fields whose empty value the schema's enum or pattern refuses.
    Checked against tests/data/metal3-bmh-status.schema.json by tests/test_metal3_status.py.
    """
    body = status.model_dump(mode="json", by_alias=True, exclude=_METALFLOW_ONLY, exclude_none=True)
    body["provisioning"].setdefault("state", status.provisioning.state.value)
    body["provisioning"].setdefault("ID", status.provisioning.id)
    if not status.provisioning.image_digest:
        body["provisioning"].pop("imageDigest", None)
    if not status.erasure:
        body.pop("erasure", None)
    image = body["provisioning"].get("image") or {}
    if "ociAuth" in image:  # metal3's shape: the Secret's name, as in the spec
        image["ociAuthSecretName"] = image.pop("ociAuth")["name"]
    # error_type None is already left out by exclude_none: no `errorType: ""` is ever written
    refs = [body.get(tried, {}).get("credentials") for tried in ("goodCredentials", "triedCredentials")]
    refs.append(body.get("node", {}).get("kubeconfig"))
    for ref in refs:  # a Secret reference is name + namespace only
        if ref:
            ref.pop("path", None)
    hardware = body.get("hardware")
    if hardware:
        for disk in hardware.get("storage", []):
            if not disk.get("type"):
                disk.pop("type", None)
        for nic in hardware.get("nics", []):
            if not nic.get("mac"):
                nic.pop("mac", None)
    conditions = metal3_conditions(status)
    if conditions:
        body["conditions"] = conditions
    return body
