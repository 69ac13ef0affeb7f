"""HostClaim and HostSet objects over real HTTP: grants, pending reasons, consumerRef on the
BareMetalHost, a rolling re-image bounded by maxUnavailable, release on delete."""

from __future__ import annotations

import asyncio
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from fixtures.kubeapi import KubeCluster
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio.client import Client
from tests_support import eventually

from k8s_bridge.controller import Bridge
from k8s_bridge.pools import ClaimController, SetController
from metalflow.api.bmh import manifest_from_host
from metalflow.api.models import CleaningMode, HostRef
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.kube import kubectl
from worker.control import build_worker

CRDS = Path(__file__).parent.parent / "k8s_bridge" / "crds"
MF, V1 = "metalflow.io", "v1alpha1"


def test_claim_and_set_crds_validate_metal3machine_shaped_objects() -> None:
    claim_crd = yaml.safe_load((CRDS / "metalflow.io_hostclaims.yaml").read_text())
    set_crd = yaml.safe_load((CRDS / "metalflow.io_hostsets.yaml").read_text())
    for crd in (claim_crd, set_crd):
        assert crd["spec"]["versions"][0]["subresources"]["status"] == {}
    assert set_crd["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    claim_spec = {
        # Metal3Machine's hostSelector, image and userData, verbatim
        "hostSelector": {
            "matchLabels": {"role": "worker"},
            "matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1"]}],
        },
        "image": {"url": "http://x/os.img", "checksum": "http://x/os.img.sha256", "checksumType": "sha256"},
        "userData": {"name": "worker-user-data"},
        "hardware": {"minCpus": 4},
    }
    claim = {"apiVersion": f"{MF}/{V1}", "kind": "HostClaim", "metadata": {"name": "c"}, "spec": claim_spec}
    jsonschema.validate(claim, claim_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    hostset = {
        "apiVersion": f"{MF}/{V1}",
        "kind": "HostSet",
        "metadata": {"name": "s"},
        "spec": {"replicas": 3, "maxUnavailable": 1, "template": {"spec": claim_spec}},
    }
    jsonschema.validate(hostset, set_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    claim_spec["hostSelector"]["matchExpressions"][0]["operator"] = "Maybe"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(claim, claim_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


async def _timeline(client: Client, ref: HostRef, since: datetime) -> list[tuple[datetime, str]]:
    """The host's recorded HostState changes (search-attribute upserts in its history) after `since`."""
    out = []
    async for e in client.get_workflow_handle(ref.workflow_id).fetch_history_events():
        if e.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            when = e.event_time.ToDatetime()
            if "HostState" in fields and when >= since:
                out.append((when, json.loads(fields["HostState"].data)))
    return out


async def test_hostclaims_and_a_hostset_roll_a_new_image_max_unavailable_at_a_time(
    client: Client,
    settings: Settings,
    kube_cluster: KubeCluster,
    kube_api: k8s.ApiClient,
    bridge_api: k8s.ApiClient,
    ns: str,
) -> None:
    settings = Settings()  # with the kubeconfig and status publishing from the environment
    co, core = k8s.CustomObjectsApi(kube_api), k8s.CoreV1Api(kube_api)

    def get(plural: str, name: str, group: str = MF, version: str = V1) -> dict[str, Any]:
        return co.get_namespaced_custom_object(group, version, ns, plural, name)  # type: ignore[return-value]

    def bmh(name: str) -> dict[str, Any]:
        return get("baremetalhosts", name, "metal3.io", "v1alpha1")

    def create(plural: str, body: dict[str, Any]) -> None:
        kind = {"hostclaims": "HostClaim", "hostsets": "HostSet"}[plural]
        co.create_namespaced_custom_object(
            MF, V1, ns, plural, {"apiVersion": f"{MF}/{V1}", "kind": kind, **body}
        )

    async with Datacenter(settings, hosts=3, prefix="pool", image_mib=4, namespace=ns) as dc:
        await asyncio.to_thread(
            core.create_namespaced_secret,
            ns,
            k8s.V1Secret(
                metadata=k8s.V1ObjectMeta(name="bmc"),
                string_data={"username": "admin", "password": dc.password},
            ),
        )
        image = dc.image_spec().model_dump(mode="json", by_alias=True, exclude_none=True)
        assert dc.image is not None
        shutil.copy(dc.image.path, dc.image.path.with_name("os-v2.img"))
        image_v2 = {**image, "url": image["url"].replace("/os.img", "/os-v2.img")}
        names = [s.name for s in dc.systems]
        controllers = [
            cls(bridge_api, client, settings, resync_seconds=300)  # rbac.yaml's rights only
            for cls in (Bridge, ClaimController, SetController)
        ]
        with ThreadPoolExecutor(max_workers=32) as executor:
            async with build_worker(client, settings, executor):
                runners = [asyncio.create_task(c.run()) for c in controllers]
                try:
                    for i in range(3):
                        host = dc.host(
                            i,
                            image=None,
                            automated_cleaning_mode=CleaningMode.DISABLED,
                            labels={"role": "worker"},
                        )
                        await asyncio.to_thread(
                            co.create_namespaced_custom_object,
                            "metal3.io",
                            "v1alpha1",
                            ns,
                            "baremetalhosts",
                            manifest_from_host(host),
                        )
                    await eventually(
                        lambda: all(
                            bmh(n).get("status", {}).get("provisioning", {}).get("state") == "available"
                            for n in names
                        ),
                        "three available BareMetalHosts",
                    )

                    # a selector that matches nothing: pending, and the status says why
                    spec_gpu = {"hostSelector": {"matchLabels": {"role": "gpu"}}, "image": image}
                    await asyncio.to_thread(
                        create, "hostclaims", {"metadata": {"name": "gpu"}, "spec": spec_gpu}
                    )
                    gpu = await eventually(
                        lambda: (o := get("hostclaims", "gpu")).get("status", {}).get("reason") and o,
                        "the gpu claim's pending reason",
                        60,
                    )
                    assert gpu["status"]["phase"] == "Pending" and gpu["status"].get("host") is None
                    assert "no available host matches selector [role=gpu]" in gpu["status"]["reason"]
                    # a spec the schema lets through but metalflow cannot use: Invalid, naming the field
                    bad = {**spec_gpu, "image": {"url": "ftp://x/os.img"}}
                    await asyncio.to_thread(create, "hostclaims", {"metadata": {"name": "bad"}, "spec": bad})
                    bad_st = await eventually(
                        lambda: (
                            get("hostclaims", "bad").get("status", {}).get("phase") == "Invalid"
                            and get("hostclaims", "bad")["status"]
                        ),
                        "the bad claim marked Invalid",
                        60,
                    )
                    assert bad_st["reason"].startswith("spec.image.url") and "http://" in bad_st["reason"]

                    # a set of two, then a claim for the one host left
                    template = {"hostSelector": {"matchLabels": {"role": "worker"}}, "image": image}
                    await asyncio.to_thread(
                        create,
                        "hostsets",
                        {
                            "metadata": {"name": "workers"},
                            "spec": {"replicas": 2, "maxUnavailable": 1, "template": {"spec": template}},
                        },
                    )
                    hs = await eventually(
                        lambda: (
                            (o := get("hostsets", "workers")).get("status", {}).get("readyReplicas") == 2
                            and o
                        ),
                        "two ready replicas",
                    )
                    members = sorted(h["name"] for h in hs["status"]["hosts"])
                    assert len(members) == 2 and hs["status"]["image"] == image["url"]
                    for name in members:  # consumerRef is on the BareMetalHost object itself
                        ref = (await asyncio.to_thread(bmh, name))["spec"]["consumerRef"]
                        assert ref["apiVersion"] == f"{MF}/{V1}" and ref["name"].startswith("workers-")
                    await asyncio.to_thread(
                        create, "hostclaims", {"metadata": {"name": "single"}, "spec": template}
                    )
                    single = await eventually(
                        lambda: (
                            (o := get("hostclaims", "single")).get("status", {}).get("phase") == "Granted"
                            and o
                        ),
                        "the single claim granted",
                        60,
                    )
                    (left,) = set(names) - set(members)
                    assert single["status"]["host"] == {"name": left, "namespace": ns}
                    assert (await asyncio.to_thread(bmh, left))["spec"]["consumerRef"] == {
                        "apiVersion": f"{MF}/{V1}",
                        "kind": "HostClaim",
                        "name": "single",
                        "namespace": ns,
                    }
                    assert (await asyncio.to_thread(bmh, left))["spec"]["image"]["url"] == image["url"]

                    # rolling re-image: a new template image, maxUnavailable 1
                    rolled_at = datetime.utcnow()
                    await asyncio.to_thread(
                        co.patch_namespaced_custom_object,
                        MF,
                        V1,
                        ns,
                        "hostsets",
                        "workers",
                        {"spec": {"template": {"spec": {"image": image_v2}}}},
                    )
                    hs = await eventually(
                        lambda: (
                            (o := get("hostsets", "workers"))["status"].get("image") == image_v2["url"]
                            and o["status"].get("readyReplicas") == 2
                            and o
                        ),
                        "both members re-imaged",
                    )
                    assert sorted(h["name"] for h in hs["status"]["hosts"]) == members
                    downs: list[tuple[datetime, int]] = []
                    for name in members:
                        ref = HostRef(namespace=ns, name=name)
                        st = await operations.status(client, ref)
                        assert st.provisioning.image and st.provisioning.image.url == image_v2["url"]
                        assert (await asyncio.to_thread(bmh, name))["status"]["provisioning"]["image"][
                            "url"
                        ] == image_v2["url"]
                        timeline = await _timeline(client, ref, rolled_at)
                        went_down = [t for t, s in timeline if s != "provisioned"]
                        assert went_down, f"{name} was never re-imaged: {timeline}"
                        was_up = True
                        for t, s in timeline:  # +1 when a member leaves provisioned, -1 when back
                            if was_up and s != "provisioned":
                                downs.append((t, +1))
                            elif not was_up and s == "provisioned":
                                downs.append((t, -1))
                            was_up = s == "provisioned"
                        assert was_up, f"{name} did not end provisioned: {timeline}"
                    at_once = peak = 0
                    for _, d in sorted(downs, key=lambda x: (x[0], x[1])):
                        at_once += d
                        peak = max(peak, at_once)
                    assert peak == 1, f"{peak} members were down at once (maxUnavailable 1): {sorted(downs)}"
                    assert (await asyncio.to_thread(bmh, left))["spec"]["image"]["url"] == image["url"], (
                        "a claim outside the set keeps its image"
                    )

                    # `kubectl scale hs` (the scale subresource sets spec.replicas): one member goes
                    admin = kube_cluster.admin_kubeconfig
                    await asyncio.to_thread(
                        kubectl, admin, "-n", ns, "scale", "hs", "workers", "--replicas=1"
                    )
                    hs = await eventually(
                        lambda: (
                            (o := get("hostsets", "workers"))["status"].get("replicas") == 1
                            and o["status"].get("readyReplicas") == 1
                            and o
                        ),
                        "the set scaled to one",
                    )
                    (kept,) = [h["name"] for h in hs["status"]["hosts"]]
                    (gone,) = set(members) - {kept}
                    await eventually(
                        lambda: "consumerRef" not in bmh(gone)["spec"],
                        f"{gone} released by the scale-down",
                        60,
                    )
                    assert "replicas: 1" in kubectl(admin, "-n", ns, "get", "hs", "workers", "-o", "yaml")

                    # deleting a HostClaim or a HostSet releases its hosts: consumerRef and image
                    # leave the BareMetalHosts, then the finalizer lets the object go
                    await asyncio.to_thread(
                        co.delete_namespaced_custom_object, MF, V1, ns, "hostclaims", "single"
                    )
                    await asyncio.to_thread(
                        co.delete_namespaced_custom_object, MF, V1, ns, "hostsets", "workers"
                    )

                    def released() -> bool:
                        if any({"consumerRef", "image"} & set(bmh(n)["spec"]) for n in names):
                            return False
                        for plural, name in (("hostclaims", "single"), ("hostsets", "workers")):
                            try:
                                get(plural, name)
                                return False
                            except ApiException as exc:
                                if exc.status != 404:
                                    raise
                        return True

                    await eventually(released, "every host released and both objects gone", 90)
                finally:
                    for c in controllers:
                        c.stop()
                    for r in runners:
                        r.cancel()
                    await asyncio.gather(*runners, return_exceptions=True)
