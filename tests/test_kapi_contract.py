"""Contract tests of the test API server: the Kubernetes semantics the bridge relies on.

Driven through the official kubernetes client (and raw HTTP where the client hides the wire),
so the same tests describe a real API server's behaviour.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes import client as k8s
from kubernetes import config, watch
from kubernetes.client.exceptions import ApiException

from testbed.kapi import KubeAPIServer, selector_matches

G, V, P = "metal3.io", "v1alpha1", "baremetalhosts"


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[KubeAPIServer, k8s.ApiClient]]:
    async with KubeAPIServer(max_events=50) as server:
        c = config.new_client_from_config(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        yield server, c
        c.close()


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
    api: tuple[KubeAPIServer, k8s.ApiClient],
) -> None:
    server, c = api
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{server.url}/apis/{G}/{V}/namespaces/default/{P}", json=bmh("a")) as r:
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
        await call(co.create_namespaced_custom_object, G, V, "default", P, bmh("a"))
    assert err.value.status == 409 and "AlreadyExists" in err.value.body


async def test_stale_resource_version_conflicts(api: tuple[KubeAPIServer, k8s.ApiClient]) -> None:
    _, c = api
    co = k8s.CustomObjectsApi(c)
    obj = await call(co.create_namespaced_custom_object, G, V, "default", P, bmh("a"))
    stale = obj["metadata"]["resourceVersion"]
    obj["spec"]["online"] = False
    fresh = await call(co.replace_namespaced_custom_object, G, V, "default", P, "a", obj)
    assert fresh["metadata"]["generation"] == 2 and fresh["metadata"]["resourceVersion"] != stale
    obj["metadata"]["resourceVersion"] = stale
    with pytest.raises(ApiException) as err:
        await call(co.replace_namespaced_custom_object, G, V, "default", P, "a", obj)
    assert err.value.status == 409


async def test_status_subresource_is_isolated(api: tuple[KubeAPIServer, k8s.ApiClient]) -> None:
    _, c = api
    co = k8s.CustomObjectsApi(c)
    await call(co.create_namespaced_custom_object, G, V, "default", P, bmh("a"))
    got = await call(
        co.patch_namespaced_custom_object_status,
        G,
        V,
        "default",
        P,
        "a",
        {"status": {"poweredOn": True}, "spec": {"online": False}},
    )
    assert got["status"] == {"poweredOn": True} and got["spec"]["online"] is True
    assert got["metadata"]["generation"] == 1, "status changes do not bump generation"
    got = await call(
        co.patch_namespaced_custom_object,
        G,
        V,
        "default",
        P,
        "a",
        {"status": {"poweredOn": False}, "spec": {"online": False}},
    )
    assert got["status"] == {"poweredOn": True} and got["spec"]["online"] is False
    assert got["metadata"]["generation"] == 2


async def test_patch_types_by_content_type_and_failed_test_op(
    api: tuple[KubeAPIServer, k8s.ApiClient],
) -> None:
    server, _ = api
    url = f"{server.url}/apis/{G}/{V}/namespaces/default/{P}"
    async with aiohttp.ClientSession() as s:
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


async def test_watch_from_resource_version_with_bookmarks_timeout_and_gone(
    api: tuple[KubeAPIServer, k8s.ApiClient],
) -> None:
    server, c = api
    co = k8s.CustomObjectsApi(c)
    first = await call(co.create_namespaced_custom_object, G, V, "default", P, bmh("a"))
    await call(co.create_namespaced_custom_object, G, V, "default", P, bmh("b", {"role": "worker"}))

    def stream(rv: str, selector: str = "") -> list[tuple[str, str]]:
        w = watch.Watch()
        seen = []
        for ev in w.stream(
            co.list_cluster_custom_object,
            G,
            V,
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
    assert any(t == "BOOKMARK" for t, _ in events), "bookmarks were asked for"
    selected = [e for e in await call(stream, "0", "role=worker") if e[0] != "BOOKMARK"]
    assert selected == [("ADDED", "b")], "a label selector filters watch events"
    server.compact()
    for i in range(3):
        await call(co.create_namespaced_custom_object, G, V, "default", P, bmh(f"c{i}"))
    with pytest.raises(ApiException) as err:
        await call(stream, first["metadata"]["resourceVersion"])
    assert err.value.status == 410


async def test_label_selectors() -> None:
    labels = {"role": "worker", "rack": "r1"}
    assert selector_matches("role=worker,rack in (r1, r2)", labels)
    assert selector_matches("role!=master,!gpu,rack", labels)
    assert not selector_matches("rack notin (r1)", labels)
    assert not selector_matches("gpu", labels)


async def test_finalizers_hold_deletion_until_removed(api: tuple[KubeAPIServer, k8s.ApiClient]) -> None:
    _, c = api
    co = k8s.CustomObjectsApi(c)
    obj = bmh("a")
    obj["metadata"]["finalizers"] = ["baremetalhost.metal3.io"]
    await call(co.create_namespaced_custom_object, G, V, "default", P, obj)
    await call(co.delete_namespaced_custom_object, G, V, "default", P, "a")
    held = await call(co.get_namespaced_custom_object, G, V, "default", P, "a")
    assert held["metadata"]["deletionTimestamp"]
    await call(co.patch_namespaced_custom_object, G, V, "default", P, "a", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        await call(co.get_namespaced_custom_object, G, V, "default", P, "a")
    assert err.value.status == 404


async def test_secret_string_data_becomes_data(api: tuple[KubeAPIServer, k8s.ApiClient]) -> None:
    _, c = api
    core = k8s.CoreV1Api(c)
    s = await call(
        core.create_namespaced_secret,
        "default",
        k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="s"), string_data={"password": "pw"}),
    )
    assert s.data == {"password": "cHc="} and not s.string_data
