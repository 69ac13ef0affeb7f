"""metal3's HostFirmwareSettings through the bridge, on the test bed's real kube-apiserver: the
settings of the object named for a BareMetalHost are applied while it prepares; its status gets
what the BMC reports, the FirmwareSchema it was checked against and metal3's Valid and
ChangeDetected conditions; an invalid one fails preparing (nothing written to the BIOS) until
the operator fixes it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes import client as k8s
from temporalio.client import Client
from tests_support import child_steps, eventually

from k8s_bridge.controller import Bridge, RelatedWatch
from metalflow.api.bmh import manifest_from_host
from metalflow.api.models import HostRef, HostSpec
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from worker.control import build_worker

G, V = "metal3.io", "v1alpha1"
CRDS = Path(__file__).parent.parent / "k8s_bridge" / "crds"


def _schema(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"metal3.io_{name}.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def hfs(name: str, ns: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "HostFirmwareSettings",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"settings": settings},
    }


def test_metal3_style_host_firmware_settings_validate_against_the_crds() -> None:
    doc = yaml.safe_load(
        """
apiVersion: metal3.io/v1alpha1
kind: HostFirmwareSettings
metadata: {name: worker-0, namespace: metal3}
spec:
  settings:
    ProcTurboMode: Disabled
    NumCores: 12
"""
    )
    jsonschema.validate(doc, _schema("hostfirmwaresettings"))
    doc["spec"]["settings"]["Bad"] = {"nested": 1}
    try:
        jsonschema.validate(doc, _schema("hostfirmwaresettings"))
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("a nested value passed the HostFirmwareSettings schema")


async def spec_of(settings: Settings, name: str, ns: str) -> HostSpec:
    """The spec the host's workflow holds (a client of its own: called in a thread)."""
    from metalflow.runtime.temporal import connect

    client = await connect(settings)
    return await operations.spec(client, HostRef(namespace=ns, name=name))


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind)


async def test_host_firmware_settings_applied_reported_and_fixed_through_the_bridge(
    client: Client, settings: Settings, kube: tuple[Path, k8s.ApiClient], bridge_api: k8s.ApiClient, ns: str
) -> None:
    _, api = kube
    settings = Settings()  # the kubeconfig and status publishing from the environment
    co, core = k8s.CustomObjectsApi(api), k8s.CoreV1Api(api)
    async with Datacenter(settings, hosts=2, prefix="fw", namespace=ns, image_mib=4) as dc:
        await asyncio.to_thread(
            core.create_namespaced_secret,
            ns,
            k8s.V1Secret(
                metadata=k8s.V1ObjectMeta(name="bmc"),
                string_data={"username": "admin", "password": dc.password},
            ),
        )
        good, bad = "fw-0", "fw-1"
        for name, wanted in (
            (good, {"ProcTurboMode": "Disabled", "QuietBoot": "false"}),
            (bad, {"ProcTurboMode": "Maybe"}),
        ):
            await asyncio.to_thread(
                co.create_namespaced_custom_object, G, V, ns, "hostfirmwaresettings", hfs(name, ns, wanted)
            )
        # rbac.yaml's rights only; no resync within the test: a change reaches the host by the watch alone
        components = {
            "apiVersion": f"{G}/{V}",
            "kind": "HostFirmwareComponents",
            "metadata": {"name": good, "namespace": ns},
            "spec": {"updates": [{"component": "bios", "url": "http://images.example/bios-1.1.bin"}]},
        }
        await asyncio.to_thread(
            co.create_namespaced_custom_object, G, V, ns, "hostfirmwarecomponents", components
        )
        bridge = Bridge(bridge_api, client, settings, resync_seconds=600)
        watch = RelatedWatch(bridge_api, bridge, "hostfirmwaresettings", resync_seconds=600)
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                runners = [asyncio.create_task(bridge.run()), asyncio.create_task(watch.run())]
                try:
                    for i in (0, 1):
                        await asyncio.to_thread(
                            co.create_namespaced_custom_object,
                            G,
                            V,
                            ns,
                            "baremetalhosts",
                            manifest_from_host(dc.host(i)),
                        )

                    def get(plural: str, name: str) -> dict[str, Any]:
                        return co.get_namespaced_custom_object(G, V, ns, plural, name)  # type: ignore[return-value]

                    def state(name: str) -> str:
                        return str(
                            (get("baremetalhosts", name).get("status") or {})
                            .get("provisioning", {})
                            .get("state")
                        )

                    await eventually(lambda: state(good) == "provisioned", "the good host to be provisioned")
                    settings_obj = await eventually(
                        lambda: (
                            (o := get("hostfirmwaresettings", good)).get("status", {}).get("settings") and o
                        ),
                        "the HostFirmwareSettings status",
                    )
                    st = settings_obj["status"]
                    assert (
                        st["settings"]["ProcTurboMode"] == "Disabled"
                        and st["settings"]["QuietBoot"] == "false"
                    )
                    assert "SysPassword" not in st["settings"]
                    assert condition(settings_obj, "Valid")["status"] == "True"
                    assert condition(settings_obj, "ChangeDetected")["status"] == "False"
                    jsonschema.validate(settings_obj, _schema("hostfirmwaresettings"))
                    schema = get("firmwareschemas", st["schema"]["name"])
                    assert st["schema"]["namespace"] == ns
                    jsonschema.validate(schema, _schema("firmwareschemas"))
                    turbo = schema["spec"]["schema"]["ProcTurboMode"]
                    assert turbo["attribute_type"] == "Enumeration" and turbo["allowable_values"] == [
                        "Enabled",
                        "Disabled",
                    ]
                    assert schema["spec"]["schema"]["NumCores"]["read_only"] is True
                    assert schema["spec"]["hardwareVendor"] == "Sushy Emulator"

                    # its HostFirmwareComponents: the BIOS flashed while preparing, versions reported
                    updated = await eventually(
                        lambda: (
                            (o := get("hostfirmwarecomponents", good)).get("status", {}).get("components")
                            and o
                        ),
                        "the HostFirmwareComponents status",
                    )
                    jsonschema.validate(updated, _schema("hostfirmwarecomponents"))
                    bios = next(c for c in updated["status"]["components"] if c["component"] == "bios")
                    assert (bios["initialVersion"], bios["currentVersion"], bios["lastVersionFlashed"]) == (
                        "1.0.0",
                        "1.1.0",
                        "1.1.0",
                    )
                    assert updated["status"]["updates"] == components["spec"]["updates"]

                    # the invalid one: preparing fails, named; nothing written; the HFS says why
                    bmh = await eventually(
                        lambda: (o := get("baremetalhosts", bad)).get("status", {}).get("errorType") and o,
                        "the bad host's error",
                    )
                    assert bmh["status"]["errorType"] == "preparation error"
                    assert (
                        "ProcTurboMode: 'Maybe' is not allowed; use one of Enabled, Disabled"
                        in bmh["status"]["errorMessage"]
                    )
                    invalid = await eventually(
                        lambda: (
                            (o := get("hostfirmwaresettings", bad)).get("status", {}).get("conditions") and o
                        ),
                        "the bad HostFirmwareSettings' conditions",
                    )
                    valid = condition(invalid, "Valid")
                    assert valid["status"] == "False" and valid["reason"] == "ConfigurationError"
                    assert "ProcTurboMode: 'Maybe' is not allowed" in valid["message"]
                    assert condition(invalid, "ChangeDetected")["status"] == "True"
                    assert dc.sushy is not None  # nothing was written to its BIOS
                    patches = dc.sushy.process.log_path.read_text()
                    assert f"metalflow-testbed: BIOS PATCH {dc.systems[1].uuid}" not in patches

                    # the operator fixes the HostFirmwareSettings: the host prepares and is provisioned
                    await asyncio.to_thread(
                        co.patch_namespaced_custom_object,
                        G,
                        V,
                        ns,
                        "hostfirmwaresettings",
                        bad,
                        {"spec": {"settings": {"ProcTurboMode": "Disabled"}}},
                    )
                    await eventually(lambda: state(bad) == "provisioned", "the fixed host to be provisioned")
                    fixed = await eventually(
                        lambda: (
                            (o := get("hostfirmwaresettings", bad))
                            and condition(o, "Valid")["status"] == "True"
                            and o
                        ),
                        "the fixed HostFirmwareSettings to be Valid",
                    )
                    assert fixed["status"]["settings"]["ProcTurboMode"] == "Disabled"

                    # servicing: with a HostUpdatePolicy onReboot, a changed HostFirmwareSettings of
                    # the provisioned host is applied at the reboot the annotation asks for
                    policy = {
                        "apiVersion": f"{G}/{V}",
                        "kind": "HostUpdatePolicy",
                        "metadata": {"name": good, "namespace": ns},
                        "spec": {"firmwareSettings": "onReboot"},
                    }
                    await asyncio.to_thread(
                        co.create_namespaced_custom_object, G, V, ns, "hostupdatepolicies", policy
                    )
                    await asyncio.to_thread(
                        co.patch_namespaced_custom_object,
                        G,
                        V,
                        ns,
                        "hostfirmwaresettings",
                        good,
                        {"spec": {"settings": {"ProcTurboMode": "Enabled"}}},
                    )
                    spec_has = lambda: asyncio.run(spec_of(settings, good, ns))  # noqa: E731
                    await eventually(
                        lambda: (
                            (sp := spec_has()).update_policy is not None
                            and sp.firmware_settings.get("ProcTurboMode") == "Enabled"
                        ),
                        "the workflow to hold the policy and the new settings",
                    )
                    assert state(good) == "provisioned"  # nothing before the reboot
                    await asyncio.to_thread(
                        co.patch_namespaced_custom_object,
                        G,
                        V,
                        ns,
                        "baremetalhosts",
                        good,
                        {"metadata": {"annotations": {"reboot.metal3.io": ""}}},
                    )
                    serviced = await eventually(
                        lambda: (
                            (o := get("hostfirmwaresettings", good))["status"]["settings"]["ProcTurboMode"]
                            == "Enabled"
                            and o
                        ),
                        "the serviced settings in the HostFirmwareSettings status",
                    )
                    assert condition(serviced, "ChangeDetected")["status"] == "False"
                    await eventually(
                        lambda: state(good) == "provisioned", "the serviced host back to provisioned"
                    )
                    ref = HostRef(namespace=ns, name=good)
                    assert (await child_steps(client, ref.workflow_id))[-1] == "ApplyFirmwareSettings"
                finally:
                    bridge.stop()
                    watch.stop()
                    for r in runners:
                        r.cancel()
                    await asyncio.gather(*runners, return_exceptions=True)
