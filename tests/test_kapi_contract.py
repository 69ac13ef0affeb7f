"""Contract tests: the Kubernetes semantics the bridge relies on, checked against the test
bed's real kube-apiserver (tests/fixtures/kubeapi.py) with metalflow's CRDs installed.

Driven through the official kubernetes client (and raw HTTP where the client hides the wire).
They were written for the home-made server this replaced; a real server passing them is what
says they describe Kubernetes.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from fixtures.kubeapi import KubeCluster
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

G, V, P = "metal3.io", "v1alpha1", "baremetalhosts"


@dataclass
class Server:
    url: str
    ssl: ssl.SSLContext  # the super-admin's client certificate, the cluster CA
    ns: str  # the test's own namespace


@pytest.fixture
def api(kube_cluster: KubeCluster, kube_api: k8s.ApiClient, ns: str) -> tuple[Server, k8s.ApiClient]:
    cp = kube_cluster.control_plane
    return Server(cp.url, cp.ssl_context(), ns), kube_api


# What metal3's CRD requires of a BareMetalHost status (the real server enforces it).
STATUS = {"operationalStatus": "OK", "errorMessage": "", "hardwareProfile": "", "provisioning": {"state": ""}}


def bmh(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "BareMetalHost",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"online": True},
    }


async def call(fn: Any, *args: Any, **kw: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kw)


async def test_create_sets_server_fields_and_rejects_duplicates(
    api: tuple[Server, k8s.ApiClient],
) -> None:
    server, c = api
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=server.ssl)) as s:
        async with s.post(f"{server.url}/apis/{G}/{V}/namespaces/{server.ns}/{P}", json=bmh("a")) as r:
            assert r.status == 201
            meta = (await r.json())["metadata"]
    assert (
        meta["uid"]
        and meta["creationTimestamp"]
        and meta["generation"] == 1
        and int(meta["resourceVersion"]) > 0
    )
    co = k8s.CustomObjectsApi(c)
    with pytest.raises(ApiException) as err:
        await call(co.create_namespaced_custom_object, G, V, server.ns, P, bmh("a"))
    assert err.value.status == 409 and "AlreadyExists" in err.value.body


async def test_stale_resource_version_conflicts(api: tuple[Server, k8s.ApiClient]) -> None:
    server, c = api
    co = k8s.CustomObjectsApi(c)
    obj = await call(co.create_namespaced_custom_object, G, V, server.ns, P, bmh("a"))
    stale = obj["metadata"]["resourceVersion"]
    obj["spec"]["online"] = False
    fresh = await call(co.replace_namespaced_custom_object, G, V, server.ns, P, "a", obj)
    assert fresh["metadata"]["generation"] == 2 and fresh["metadata"]["resourceVersion"] != stale
    obj["metadata"]["resourceVersion"] = stale
    with pytest.raises(ApiException) as err:
        await call(co.replace_namespaced_custom_object, G, V, server.ns, P, "a", obj)
    assert err.value.status == 409


async def test_status_subresource_is_isolated(api: tuple[Server, k8s.ApiClient]) -> None:
    server, c = api
    co = k8s.CustomObjectsApi(c)
    await call(co.create_namespaced_custom_object, G, V, server.ns, P, bmh("a"))
    got = await call(
        co.patch_namespaced_custom_object_status,
        G,
        V,
        server.ns,
        P,
        "a",
        {"status": {**STATUS, "poweredOn": True}, "spec": {"online": False}},
    )
    assert got["status"] == {**STATUS, "poweredOn": True} and got["spec"]["online"] is True
    assert got["metadata"]["generation"] == 1, "status changes do not bump generation"
    got = await call(
        co.patch_namespaced_custom_object,
        G,
        V,
        server.ns,
        P,
        "a",
        {"status": {**STATUS, "poweredOn": False}, "spec": {"online": False}},
    )
    assert got["status"] == {**STATUS, "poweredOn": True} and got["spec"]["online"] is False
    assert got["metadata"]["generation"] == 2


async def test_patch_types_by_content_type_and_failed_test_op(
    api: tuple[Server, k8s.ApiClient],
) -> None:
    server, _ = api
    url = f"{server.url}/apis/{G}/{V}/namespaces/{server.ns}/{P}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=server.ssl)) as s:
        await s.post(url, json=bmh("a", {"x": "1"}))
        merge = {"Content-Type": "application/merge-patch+json"}
        async with s.patch(
            f"{url}/a", data=json.dumps({"metadata": {"labels": {"x": None, "y": "2"}}}), headers=merge
        ) as r:
            assert (await r.json())["metadata"]["labels"] == {"y": "2"}
        jp = {"Content-Type": "application/json-patch+json"}
        ops = [
            {"op": "test", "path": "/spec/online", "value": True},
            {"op": "replace", "path": "/spec/online", "value": False},
        ]
        async with s.patch(f"{url}/a", data=json.dumps(ops), headers=jp) as r:
            assert r.status == 200 and (await r.json())["spec"]["online"] is False
        async with s.patch(f"{url}/a", data=json.dumps(ops), headers=jp) as r:
            assert r.status == 422 and (await r.json())["kind"] == "Status"


async def test_watch_from_resource_version_with_bookmarks_and_timeout(
    api: tuple[Server, k8s.ApiClient],
) -> None:
    server, c = api
    co = k8s.CustomObjectsApi(c)
    first = await call(co.create_namespaced_custom_object, G, V, server.ns, P, bmh("a"))
    await call(co.create_namespaced_custom_object, G, V, server.ns, P, bmh("b", {"role": "worker"}))

    def stream(rv: str, selector: str = "") -> list[tuple[str, str]]:
        w = watch.Watch()
        seen = []
        for ev in w.stream(
            co.list_namespaced_custom_object,
            G,
            V,
            server.ns,
            P,
            resource_version=rv,
            timeout_seconds=2,
            allow_watch_bookmarks=True,
            label_selector=selector,
        ):
            seen.append((ev["type"], ev["object"]["metadata"].get("name", "")))
        return seen

    events = await call(stream, first["metadata"]["resourceVersion"])
    assert ("ADDED", "b") in events and ("ADDED", "a") not in events, "only events after the given RV"
    # Bookmarks were asked for; the real server sends them about once a minute, not in 2 s.
    selected = [e for e in await call(stream, "0", "role=worker") if e[0] != "BOOKMARK"]
    assert selected == [("ADDED", "b")], "a label selector filters watch events"


async def test_finalizers_hold_deletion_until_removed(api: tuple[Server, k8s.ApiClient]) -> None:
    server, c = api
    co = k8s.CustomObjectsApi(c)
    obj = bmh("a")
    obj["metadata"]["finalizers"] = ["baremetalhost.metal3.io"]
    await call(co.create_namespaced_custom_object, G, V, server.ns, P, obj)
    await call(co.delete_namespaced_custom_object, G, V, server.ns, P, "a")
    held = await call(co.get_namespaced_custom_object, G, V, server.ns, P, "a")
    assert held["metadata"]["deletionTimestamp"]
    await call(co.patch_namespaced_custom_object, G, V, server.ns, P, "a", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        await call(co.get_namespaced_custom_object, G, V, server.ns, P, "a")
    assert err.value.status == 404


async def test_secret_string_data_becomes_data(api: tuple[Server, k8s.ApiClient]) -> None:
    server, c = api
    core = k8s.CoreV1Api(c)
    s = await call(
        core.create_namespaced_secret,
        server.ns,
        k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="s"), string_data={"password": "pw"}),
    )
    assert s.data == {"password": "cHc="} and not s.string_data
