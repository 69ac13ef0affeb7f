"""A campaign's change written where a BareMetalHost's firmware lives in Kubernetes: its
HostFirmwareSettings (`spec.settings`, merged), HostFirmwareComponents (`spec.updates`) and
HostUpdatePolicy (`onReboot` for what changes), each named for the host. The bridge's watches
carry them to the host's workflow, as for any operator's edit; objects the campaign creates are
owned by the BareMetalHost (deleted with it)."""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from metalflow.api.campaign import CampaignChange
from metalflow.api.kube_names import (
    HFC_KIND,
    HFC_PLURAL,
    HFS_KIND,
    HFS_PLURAL,
    HUP_KIND,
    HUP_PLURAL,
    METAL3_GROUP,
    METAL3_VERSION,
)
from metalflow.api.models import HostRef
from metalflow.runtime.kube import api_client


def _put(
    api: k8s.CustomObjectsApi, ref: HostRef, uid: str, kind: str, plural: str, spec: dict[str, Any]
) -> None:
    """Merge SPEC into the object named for the host, creating it when there is none."""
    try:
        api.patch_namespaced_custom_object(
            METAL3_GROUP, METAL3_VERSION, ref.namespace, plural, ref.name, {"spec": spec}
        )
        return
    except ApiException as exc:
        if exc.status != 404:
            raise
    owner = {
        "apiVersion": f"{METAL3_GROUP}/{METAL3_VERSION}",
        "kind": "BareMetalHost",
        "name": ref.name,
        "uid": uid,
    }
    body = {
        "apiVersion": f"{METAL3_GROUP}/{METAL3_VERSION}",
        "kind": kind,
        "metadata": {"name": ref.name, "namespace": ref.namespace, "ownerReferences": [owner]},
        "spec": spec,
    }
    api.create_namespaced_custom_object(METAL3_GROUP, METAL3_VERSION, ref.namespace, plural, body)


def put_change(ref: HostRef, uid: str, change: CampaignChange) -> None:
    with api_client() as kube:
        api = k8s.CustomObjectsApi(kube)
        policy: dict[str, str] = {}
        if change.firmware_settings:
            _put(api, ref, uid, HFS_KIND, HFS_PLURAL, {"settings": change.firmware_settings})
            policy["firmwareSettings"] = "onReboot"
        if change.firmware_updates:
            updates = [u.model_dump(mode="json", by_alias=True) for u in change.firmware_updates]
            _put(api, ref, uid, HFC_KIND, HFC_PLURAL, {"updates": updates})
            policy["firmwareUpdates"] = "onReboot"
        _put(api, ref, uid, HUP_KIND, HUP_PLURAL, policy)
