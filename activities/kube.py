"""BareMetalHost writes for the pool activities: consumerRef and a claim's image, on the object.

A host the Kubernetes bridge started carries its BareMetalHost's uid in its workflow memo. For
such a host the object is the source of truth (as for Cluster API's Metal3Machine controller),
so grants and releases are written there and the bridge carries them to the workflow; a direct
workflow update would be undone by the bridge's next reconcile. Workers with Kubernetes status
publishing off treat every host as script-driven.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio.client import Client

from metalflow.api.claims import ClaimSpec
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.kube_names import BMH_PLURAL, METAL3_GROUP, METAL3_VERSION
from metalflow.api.models import ConsumerRef, HostRef, SecretRef
from metalflow.runtime.kube import api_client
from metalflow.runtime.settings import get_settings

Ops = list[dict[str, Any]]


async def managed_uid(client: Client, ref: HostRef) -> str:
    """The uid of the BareMetalHost behind the host's workflow; '' for a script-driven host."""
    if not get_settings().publish_status_to_kubernetes:
        return ""
    desc = await client.get_workflow_handle(ref.workflow_id).describe()
    return str((await desc.memo()).get("uid", ""))


def _read(api: k8s.CustomObjectsApi, ref: HostRef, uid: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = api.get_namespaced_custom_object(  # type: ignore[assignment]
            METAL3_GROUP, METAL3_VERSION, ref.namespace, BMH_PLURAL, ref.name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    if obj["metadata"].get("uid") != uid:
        raise permanent(
            ErrorName.INVALID_SPEC,
            f"BareMetalHost {ref.namespace}/{ref.name} was deleted and created again; claim again",
        )
    return obj


def _patch(ref: HostRef, uid: str, ops_for: Callable[[dict[str, Any]], Ops], missing_ok: bool) -> None:
    """Apply JSON-patch ops computed from the current object, guarded by its resourceVersion."""
    with api_client() as kube:
        api = k8s.CustomObjectsApi(kube)
        obj = _read(api, ref, uid)
        if obj is None:
            if missing_ok:
                return
            raise permanent(ErrorName.INVALID_SPEC, f"BareMetalHost {ref.namespace}/{ref.name} is gone")
        ops = ops_for(obj)
        if not ops:
            return
        guard = {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": obj["metadata"]["resourceVersion"],
        }
        # A 409/422 (the object changed under us) is retried by the activity's retry policy.
        api.patch_namespaced_custom_object(
            METAL3_GROUP,
            METAL3_VERSION,
            ref.namespace,
            BMH_PLURAL,
            ref.name,
            [guard, *ops],
            _content_type="application/json-patch+json",
        )


def _secret(ref: SecretRef) -> dict[str, str]:
    return {"name": ref.name, "namespace": ref.namespace}


def assign(ref: HostRef, uid: str, claim_id: str, claim: ClaimSpec, consumer: ConsumerRef) -> None:
    def ops(obj: dict[str, Any]) -> Ops:
        spec = obj.get("spec") or {}
        holder = (spec.get("consumerRef") or {}).get("name")
        if holder and holder != claim_id:
            raise permanent(ErrorName.INVALID_SPEC, f"{ref.name} is already consumed by {holder}")
        out: Ops = [
            {
                "op": "add",
                "path": "/spec/image",
                "value": claim.image.model_dump(mode="json", by_alias=True, exclude_none=True),
            },
            {
                "op": "add",
                "path": "/spec/consumerRef",
                "value": consumer.model_dump(mode="json", by_alias=True, exclude_none=True),
            },
        ]
        if claim.user_data is not None:
            out.append({"op": "add", "path": "/spec/userData", "value": _secret(claim.user_data)})
        if claim.network_data is not None:
            out.append({"op": "add", "path": "/spec/networkData", "value": _secret(claim.network_data)})
        if claim.join is not None:
            join = claim.join.model_dump(mode="json", by_alias=True, exclude_none=True)
            out.append({"op": "add", "path": "/spec/join", "value": join})
        elif "join" in spec:
            out.append({"op": "remove", "path": "/spec/join"})
        return out

    _patch(ref, uid, ops, missing_ok=False)


def release(ref: HostRef, uid: str, claim_id: str) -> None:
    """Clear image, join and consumerRef: the host deprovisions per automatedCleaningMode."""

    def ops(obj: dict[str, Any]) -> Ops:
        spec = obj.get("spec") or {}
        if (spec.get("consumerRef") or {}).get("name") != claim_id:
            return []
        return [{"op": "remove", "path": f"/spec/{f}"} for f in ("image", "join", "consumerRef") if f in spec]

    _patch(ref, uid, ops, missing_ok=True)


def image_url(ref: HostRef, uid: str, default: str) -> str:
    """The image URL the BareMetalHost asks for now."""
    with api_client() as kube:
        obj = _read(k8s.CustomObjectsApi(kube), ref, uid)
    if obj is None:
        return default
    return str(((obj.get("spec") or {}).get("image") or {}).get("url") or "")
