"""metal3's status schema enforced by the real kube-apiserver, not only by jsonschema.

tests/data/metal3-bmh-status.schema.json (metal3's CRD status schema rebuilt by hand from its
facts) is served here as the status schema of a BareMetalHost CRD in a group of the test's own,
so it sits beside metalflow's CRD on the session's API server. Every status bmh_status writes
must be accepted by the server and read back unchanged: a value outside metal3's enums or
patterns would be refused (422) and a field metal3 does not know would be pruned. Both are shown
to happen, so the round trip can fail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from test_metal3_status import STATUSES

from metalflow.api.models import HostStatus, ProvisioningState, ProvisionStatus
from metalflow.api.status import bmh_status
from testbed.processes import wait_for

GROUP, VERSION, PLURAL = "metal3-schema.metalflow.test", "v1alpha1", "baremetalhosts"
SCHEMA = json.loads((Path(__file__).parent / "data" / "metal3-bmh-status.schema.json").read_text())


def structural(schema: Any) -> Any:
    """The JSON schema as a CRD's OpenAPI v3 schema: no $-keywords, `type: [T, "null"]` as
    `nullable`, and closed objects left to pruning (Kubernetes refuses additionalProperties
    beside properties)."""
    if isinstance(schema, list):
        return [structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key.startswith("$") or key == "title" or (key == "additionalProperties" and value is False):
            continue
        if key == "type" and isinstance(value, list):
            out["type"] = next(t for t in value if t != "null")
            out["nullable"] = "null" in value
            continue
        out[key] = value if key in ("enum", "required") else structural(value)
    return out


@pytest.fixture(scope="module")
def metal3_crd(kube_cluster: Any) -> Iterator[Any]:
    api = kube_cluster.admin_client()
    ext = k8s.ApiextensionsV1Api(api)
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": "BareMetalHost", "plural": PLURAL, "singular": "baremetalhost"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                "status": structural(SCHEMA),
                            },
                        }
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(body)

    def established() -> bool:
        crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_for(established, 60, "metal3's status schema CRD to be established")
    yield api
    ext.delete_custom_resource_definition(f"{PLURAL}.{GROUP}")
    api.close()


def round_trip(api: Any, name: str, status: dict[str, Any]) -> dict[str, Any]:
    """Create a host, write STATUS through the status subresource, return what the server kept."""
    co = k8s.CustomObjectsApi(api)
    obj = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BareMetalHost",
        "metadata": {"name": name},
        "spec": {},
    }
    created = co.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, obj)
    try:
        created["status"] = status
        written = co.replace_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, name, created)
        return dict(written.get("status") or {})
    finally:
        co.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)


@pytest.mark.parametrize("case", STATUSES.keys())
def test_the_api_server_keeps_every_status_metalflow_writes(metal3_crd: Any, case: str) -> None:
    written = bmh_status(STATUSES[case])
    kept = round_trip(metal3_crd, "host-" + str(abs(hash(case)) % 10**8), written)
    assert kept == json.loads(json.dumps(written)), f"{case}: the server pruned or changed fields"


def test_the_server_enforces_the_schema(metal3_crd: Any) -> None:
    """The round trip can fail: an empty errorType is refused, an unknown field pruned."""
    good = bmh_status(HostStatus(provisioning=ProvisionStatus(state=ProvisioningState.AVAILABLE)))
    with pytest.raises(ApiException) as refused:
        round_trip(metal3_crd, "empty-error-type", {**good, "errorType": ""})
    assert refused.value.status == 422 and "errorType" in str(refused.value.body)
    kept = round_trip(metal3_crd, "unknown-field", {**good, "notMetal3": "x"})
    assert "notMetal3" not in kept
