"""The Campaign kind (metalflow.io/v1alpha1) end to end through the bridge, on the test bed's real
kube-apiserver, with rbac.yaml's rights: a Campaign picks BareMetalHosts by label; the campaign
writes the change into each host's HostFirmwareSettings and HostUpdatePolicy (created, owned by
the BareMetalHost); the bridge's watches carry them to the host; each host is serviced once
(counted at the emulator); the Campaign's status and printer columns follow to Succeeded."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes import client as k8s
from temporalio.client import Client
from tests_support import emulator_bios_writes as bios_writes
from tests_support import eventually

from k8s_bridge.campaigns import CampaignController
from k8s_bridge.controller import Bridge, RelatedWatch
from metalflow.api.bmh import manifest_from_host
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from worker.control import build_worker

G, V = "metal3.io", "v1alpha1"
MG = "metalflow.io"
CRD = Path(__file__).parent.parent / "k8s_bridge" / "crds" / "metalflow.io_campaigns.yaml"


def campaign(ns: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{MG}/{V}",
        "kind": "Campaign",
        "metadata": {"name": "turbo-off", "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"rack": "r1"}},
            "change": {"firmwareSettings": {"ProcTurboMode": "Disabled"}},
            "canary": 1,
            "maxUnavailable": 1,
            **spec,
        },
    }


def test_the_campaign_crd_takes_the_readme_example_and_refuses_a_selector_without_labels() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate(campaign("default", failureBudget=2), schema)
    bad = campaign("default")
    bad["spec"]["selector"] = {"matchLabels": {}}
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("an empty selector passed the Campaign schema")


async def test_a_campaign_object_services_its_bare_metal_hosts_through_the_bridge(
    client: Client, settings: Settings, kube: tuple[Path, k8s.ApiClient], bridge_api: k8s.ApiClient, ns: str
) -> None:
    _, api = kube
    settings = Settings()  # the kubeconfig and status publishing from the environment
    co, core = k8s.CustomObjectsApi(api), k8s.CoreV1Api(api)
    async with Datacenter(settings, hosts=3, prefix="cmp", namespace=ns, image_mib=4) as dc:
        await asyncio.to_thread(
            core.create_namespaced_secret,
            ns,
            k8s.V1Secret(
                metadata=k8s.V1ObjectMeta(name="bmc"),
                string_data={"username": "admin", "password": dc.password},
            ),
        )
        bridge = Bridge(bridge_api, client, settings, resync_seconds=600)
        watches = [
            RelatedWatch(bridge_api, bridge, plural, resync_seconds=600)
            for plural in ("hostfirmwaresettings", "hostupdatepolicies")
        ]
        campaigns = CampaignController(bridge_api, client, settings, resync_seconds=600)
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                runners = [asyncio.create_task(c.run()) for c in (bridge, *watches, campaigns)]
                try:
                    names = []
                    for i in range(3):
                        host = dc.host(i, labels={"rack": "r1" if i < 2 else "r2"})
                        names.append(host.ref.name)
                        await asyncio.to_thread(
                            co.create_namespaced_custom_object,
                            G,
                            V,
                            ns,
                            "baremetalhosts",
                            manifest_from_host(host),
                        )

                    def get(group: str, plural: str, name: str) -> dict[str, Any]:
                        return co.get_namespaced_custom_object(group, V, ns, plural, name)  # type: ignore[return-value]

                    def provisioned() -> bool:
                        return all(
                            (get(G, "baremetalhosts", n).get("status") or {})
                            .get("provisioning", {})
                            .get("state")
                            == "provisioned"
                            for n in names
                        )

                    await eventually(provisioned, "three hosts provisioned")
                    await asyncio.to_thread(
                        co.create_namespaced_custom_object, MG, V, ns, "campaigns", campaign(ns)
                    )
                    ended = await eventually(
                        lambda: (
                            (o := get(MG, "campaigns", "turbo-off")).get("status", {}).get("phase")
                            in ("Succeeded", "Halted", "Failed", "Aborted")
                            and o
                        ),
                        "the Campaign to end",
                        timeout=300,
                    )
                    st = ended["status"]
                    assert (st["phase"], st["done"], st["total"], st["failed"]) == ("Succeeded", 2, 2, 0), st
                    assert st["drift"] == [] and st["waveLabel"] == "1/1", st
                    assert [(h["name"], h["phase"], h["wave"]) for h in st["hosts"]] == [
                        (names[0], "Done", 0),
                        (names[1], "Done", 1),
                    ], st["hosts"]
                    jsonschema.validate(
                        ended,
                        yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
                    )
                    # the change went where an operator would have written it, owned by the host
                    for n in names[:2]:
                        hfs = get(G, "hostfirmwaresettings", n)
                        assert hfs["spec"]["settings"] == {"ProcTurboMode": "Disabled"}
                        assert hfs["metadata"]["ownerReferences"][0]["kind"] == "BareMetalHost"
                        assert get(G, "hostupdatepolicies", n)["spec"] == {"firmwareSettings": "onReboot"}
                        assert hfs["status"]["settings"]["ProcTurboMode"] == "Disabled"
                    assert [len(bios_writes(dc, i)) for i in range(3)] == [1, 1, 0]
                finally:
                    for r in runners:
                        r.cancel()
                    await asyncio.gather(*runners, return_exceptions=True)
