"""The bridge over real HTTP: a metal3 BareMetalHost drives its workflow; status flows back.

Runs against the test bed's real kube-apiserver (or a real cluster when METALFLOW_TEST_KUBECONFIG
is set and the CRD is installed there); the bridge with the ServiceAccount token of rbac.yaml.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio.client import Client
from tests_support import eventually, workflow_paused

from k8s_bridge.controller import Bridge
from k8s_bridge.reconcile import FINALIZER, PAUSED
from metalflow.api.bmh import manifest_from_host
from metalflow.api.models import HostRef
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from worker.control import build_worker

G, V, P = "metal3.io", "v1alpha1", "baremetalhosts"
CRD = Path(__file__).parent.parent / "k8s_bridge" / "crds" / "metal3.io_baremetalhosts.yaml"


def test_metal3_example_manifest_validates_against_the_crd() -> None:
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["names"]["shortNames"] == ["bmh", "bmhost"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "State",
        "Consumer",
        "Online",
        "Error",
        "Age",
    ]
    schema = version["schema"]["openAPIV3Schema"]
    example = yaml.safe_load("""
apiVersion: metal3.io/v1alpha1
kind: BareMetalHost
metadata: {name: worker-0, namespace: metal3}
spec:
  online: true
  bootMACAddress: 00:c4:70:a6:b1:ac
  bootMode: UEFI
  bmc:
    address: ipmi://192.168.111.1:6230
    credentialsName: worker-0-bmc-secret
    disableCertificateVerification: true
  rootDeviceHints: {deviceName: /dev/sda, minSizeGigabytes: 20}
  automatedCleaningMode: metadata
  image:
    url: http://172.22.0.1/images/CentOS-7.qcow2
    checksum: http://172.22.0.1/images/CentOS-7.qcow2.md5sum
    checksumType: md5
    format: qcow2
  userData: {name: centos-user-data, namespace: metal3}
  networkData: {name: worker-0-network, namespace: metal3}
  externallyProvisioned: false
  consumerRef:
    apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
    kind: Metal3Machine
    name: m0
    namespace: metal3
  raid: {hardwareRAIDVolumes: [{level: "1", sizeGibibytes: 100}]}
  description: rack 3, slot 7
""")
    jsonschema.validate(example, schema)
    example["spec"]["bootMode"] = "BIOS"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(example, schema)


def test_manifests_parse_and_rbac_is_least_privilege() -> None:
    docs = [
        d
        for f in sorted((CRD.parent.parent / "manifests").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
    ]
    kinds = {d["kind"] for d in docs}
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Namespace"} <= kinds
    role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "metalflow")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "delete" not in rule["verbs"]
    # in a cluster hosts join (join-rbac.yaml): deletes only the Nodes it drains and its tokens
    join = [
        d for d in docs if d["kind"] in ("Role", "ClusterRole") and d["metadata"]["name"] == "metalflow-join"
    ]
    assert len(join) == 3
    for rule in (r for d in join for r in d["rules"]):
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "delete" in rule["verbs"]:
            assert rule["resources"] in (["nodes"], ["secrets"]), rule
    commands = {
        c["command"][1]
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert commands == {"bridge", "worker"}


async def test_baremetalhost_is_provisioned_reported_and_released_on_delete(
    client: Client, settings: Settings, kube: tuple[Path, k8s.ApiClient], bridge_api: k8s.ApiClient, ns: str
) -> None:
    _, api = kube
    settings = Settings()  # picks up the kubeconfig and status publishing from the environment
    co, core = k8s.CustomObjectsApi(api), k8s.CoreV1Api(api)
    async with Datacenter(settings, hosts=1, prefix="bmh", namespace=ns) as dc:
        await asyncio.to_thread(
            core.create_namespaced_secret,
            ns,
            k8s.V1Secret(
                metadata=k8s.V1ObjectMeta(name="bmc"),
                string_data={"username": "admin", "password": dc.password},
            ),
        )
        manifest = manifest_from_host(dc.host(0))
        bridge = Bridge(bridge_api, client, settings, resync_seconds=5)  # rbac.yaml's rights only
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                runner = asyncio.create_task(bridge.run())
                try:
                    await asyncio.to_thread(co.create_namespaced_custom_object, G, V, ns, P, manifest)
                    ref = HostRef(namespace=ns, name="bmh-0")

                    def get() -> dict[str, Any]:
                        return co.get_namespaced_custom_object(G, V, ns, P, "bmh-0")  # type: ignore[return-value]

                    obj = await eventually(
                        lambda: (
                            (o := get()).get("status", {}).get("provisioning", {}).get("state")
                            == "provisioned"
                            and o
                        ),
                        "the BareMetalHost status to say provisioned",
                    )
                    st = obj["status"]
                    assert FINALIZER in obj["metadata"]["finalizers"]
                    assert (
                        st["operationalStatus"] == "OK" and st["poweredOn"] is True and "errorType" not in st
                    )
                    assert st["hardware"]["nics"][0]["mac"] == dc.systems[0].mac
                    assert st["goodCredentials"]["credentials"]["name"] == "bmc"
                    assert st["provisioning"]["image"]["url"] == manifest["spec"]["image"]["url"]
                    assert dc.password not in str(obj)
                    jsonschema.validate(
                        obj,
                        yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
                    )

                    # the paused annotation reaches the workflow; removing it resumes
                    await asyncio.to_thread(
                        co.patch_namespaced_custom_object,
                        G,
                        V,
                        ns,
                        P,
                        "bmh-0",
                        {"metadata": {"annotations": {PAUSED: ""}}},
                    )
                    await eventually(
                        lambda: asyncio.run(workflow_paused(settings, ref)), "the workflow to pause", 30
                    )
                    await asyncio.to_thread(
                        co.patch_namespaced_custom_object,
                        G,
                        V,
                        ns,
                        P,
                        "bmh-0",
                        {"metadata": {"annotations": {PAUSED: None}}},
                    )
                    await eventually(
                        lambda: not asyncio.run(workflow_paused(settings, ref)), "the workflow to resume", 30
                    )

                    # reboot.metal3.io: one power cycle into the OS, and the bridge removes the annotation
                    boots = len(dc.emulated[0].boots)
                    await asyncio.to_thread(
                        co.patch_namespaced_custom_object,
                        G,
                        V,
                        ns,
                        P,
                        "bmh-0",
                        {"metadata": {"annotations": {"reboot.metal3.io": ""}}},
                    )
                    await eventually(
                        lambda: (
                            len(dc.emulated[0].boots) > boots
                            and "reboot.metal3.io" not in (get()["metadata"].get("annotations") or {})
                        ),
                        "the reboot to happen and its annotation to go",
                        60,
                    )
                    assert dc.emulated[0].boots[-1].target == "Hdd", (
                        "a reboot of a provisioned host boots its disk"
                    )

                    # delete: deprovision (metadata cleaning), then the finalizer goes and so does the object
                    await asyncio.to_thread(co.delete_namespaced_custom_object, G, V, ns, P, "bmh-0")

                    def gone() -> bool:
                        try:
                            get()
                        except ApiException as exc:
                            return exc.status == 404
                        return False

                    await eventually(gone, "the BareMetalHost to be released and deleted")
                    result = await operations.handle_for(client, ref).result()
                    assert result.deleted and result.provisioning.state.value == "deleting"
                    assert dc.emulated[0].boots[-1].target == "Pxe", (
                        "deprovisioning booted the ramdisk to clean"
                    )
                    with dc.emulated[0].disk_path.open("rb") as f:
                        assert f.read(1 << 20) == bytes(1 << 20)
                finally:
                    bridge.stop()
                    runner.cancel()
                    await asyncio.gather(runner, return_exceptions=True)


def test_fingerprint_skips_status_writes_and_our_own_patches_only() -> None:
    """The bridge skips events that change nothing it reads; everything else is reconciled."""
    from k8s_bridge.reconcile import Plan, fingerprint

    obj: dict[str, Any] = {
        "metadata": {"uid": "u1", "generation": 1, "annotations": {"reboot.metal3.io": ""}},
        "spec": {"online": True},
    }
    done = fingerprint(obj, Plan(add_finalizer=True, remove_annotations=["reboot.metal3.io"]))
    echo = {
        "metadata": {"uid": "u1", "generation": 1, "finalizers": [FINALIZER], "annotations": {}},
        "spec": {"online": True},
        "status": {"operationalStatus": "OK"},
    }
    assert fingerprint(echo) == done, "the echo of the bridge's own patch and status writes are no-ops"
    for changed in (
        {**echo, "spec": {"online": False}},
        {**echo, "metadata": {**echo["metadata"], "uid": "u2"}},
        {**echo, "metadata": {**echo["metadata"], "annotations": {PAUSED: ""}}},
        {**echo, "metadata": {**echo["metadata"], "finalizers": []}},
        {**echo, "metadata": {**echo["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}},
    ):
        assert fingerprint(changed) != done
