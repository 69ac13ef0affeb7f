"""The worker's Prometheus endpoints, scraped over loopback after a host registers and inspects."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import urllib.request
from pathlib import Path

from fixtures.kubeapi import KubeCluster
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client, WorkflowExecutionStatus

from metalflow.api.models import HostRef, ProvisioningState
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.processes import Process, free_port


def scrape(port: int) -> dict[str, float]:
    """Every sample as `name{label="value",...}` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


def one(samples: dict[str, float], name: str, *labels: str) -> float:
    """The value of the one sample of NAME whose labels include LABELS."""
    found = [v for k, v in samples.items() if k.split("{")[0] == name and all(lb in k for lb in labels)]
    assert len(found) == 1, (name, labels, [k for k in samples if k.startswith(name)])
    return found[0]


async def test_worker_exports_host_counts_step_durations_and_sdk_metrics(
    client: Client, settings: Settings, tmp_path: Path, ns: str
) -> None:
    port, sdk_port = free_port(), free_port()
    async with Datacenter(settings, hosts=1, prefix="metrics", namespace=ns) as dc:
        worker = Process(
            "metalflow worker",
            [sys.executable, "-m", "metalflow", "worker"],
            tmp_path / "worker.log",
            env={
                "METALFLOW_METRICS_ADDRESS": f"127.0.0.1:{port}",
                "METALFLOW_SDK_METRICS_ADDRESS": f"127.0.0.1:{sdk_port}",
            },
        )
        try:
            host = dc.host(0, image=None)
            await operations.apply(client, host, settings)
            done = await operations.wait_settled(client, [host], timeout=180)
            assert done[host.ref.workflow_id].provisioning.state == ProvisioningState.AVAILABLE
            worker.check_alive()

            ours = await asyncio.to_thread(scrape, port)
            # fleet-wide counts from visibility: at least this host is available
            assert ours['metalflow_hosts{state="available"}'] >= 1
            assert 'metalflow_hosts_in_error{error_type="registration error"}' in ours

            sdk = await asyncio.to_thread(scrape, sdk_port)
            # recorded by the host's workflow (its metric meter): once per finished operation
            for op in ("register", "inspect"):
                count = one(sdk, "metalflow_step_duration_seconds_count", f'operation="{op}"')
                total = one(sdk, "metalflow_step_duration_seconds_sum", f'operation="{op}"')
                assert count == 1 and total > 0, (op, count, total)
                # the worker's buckets, not the SDK's millisecond ones
                assert (
                    one(sdk, "metalflow_step_duration_seconds_bucket", f'operation="{op}"', 'le="7200"') == 1
                )
            assert one(sdk, "metalflow_status_publishes_total", 'state="available"') >= 1
            completed = {k: v for k, v in sdk.items() if k.startswith("temporal_workflow_completed")}
            assert any(k.startswith("temporal_worker_task_slots_used") for k in sdk)
            for step in ("RegisterHost", "InspectHost", "CleanHost"):
                assert any(f'workflow_type="{step}"' in k and v >= 1 for k, v in completed.items()), completed
            assert any(
                k.startswith("temporal_activity_execution_latency") and 'activity_type="bmc.validate"' in k
                for k in sdk
            ), sorted(sdk)[:40]
            # the Temporal UI's labels: every step and every activity in these histories has a summary
            await assert_every_command_has_a_summary(client, host.ref.workflow_id)
        finally:
            worker.stop()


async def assert_every_command_has_a_summary(client: Client, workflow_id: str) -> None:
    seen = 0
    async for wf in client.list_workflows(f'WorkflowId STARTS_WITH "{workflow_id}"'):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        for event in history.events:
            local = event.marker_recorded_event_attributes.marker_name == "core_local_activity"
            if (
                local
                or event.HasField("activity_task_scheduled_event_attributes")
                or event.HasField("start_child_workflow_execution_initiated_event_attributes")
            ):
                [summary] = await client.data_converter.decode([event.user_metadata.summary])
                assert isinstance(summary, str) and summary.strip(), (wf.id, event.event_id)
                seen += 1
    assert seen >= 10, seen  # steps, BMC and agent calls, boot files (a script's host writes no status)


async def test_bridge_exports_reconcile_metrics(
    client: Client,
    settings: Settings,
    tmp_path: Path,
    ns: str,
    kube_cluster: KubeCluster,
    kube_api: k8s.ApiClient,
) -> None:
    port, sdk_port = free_port(), free_port()
    if True:  # the bridge process runs with rbac.yaml's ServiceAccount token on the real API server
        kubeconfig = kube_cluster.bridge_kubeconfig
        bridge = Process(
            "metalflow bridge",
            [sys.executable, "-m", "metalflow", "bridge"],
            tmp_path / "bridge.log",
            env={
                "METALFLOW_KUBECONFIG": str(kubeconfig),
                "METALFLOW_METRICS_ADDRESS": f"127.0.0.1:{port}",
                "METALFLOW_SDK_METRICS_ADDRESS": f"127.0.0.1:{sdk_port}",
            },
        )
        ref = HostRef(namespace=ns, name="scraped")
        try:
            bmh = {
                "apiVersion": "metal3.io/v1alpha1",
                "kind": "BareMetalHost",
                "metadata": {"name": ref.name, "namespace": ns},
                "spec": {
                    "online": False,
                    "bootMACAddress": "52:54:00:00:99:01",
                    "bmc": {
                        "address": "redfish+http://127.0.0.1:9/redfish/v1/Systems/1",
                        "credentialsName": "x",
                    },
                },
            }
            await asyncio.to_thread(
                k8s.CustomObjectsApi(kube_api).create_namespaced_custom_object,
                "metal3.io",
                "v1alpha1",
                ns,
                "baremetalhosts",
                bmh,
            )

            def reconciled() -> dict[str, float] | None:
                bridge.check_alive()
                try:
                    got = scrape(port)
                except OSError:  # not listening yet
                    return None
                return (
                    got
                    if got.get('metalflow_bridge_reconciles_total{kind="baremetalhosts",result="ok"}', 0) >= 1
                    else None
                )

            deadline = asyncio.get_running_loop().time() + 120
            while (ours := await asyncio.to_thread(reconciled)) is None:
                assert asyncio.get_running_loop().time() < deadline, (tmp_path / "bridge.log").read_text()[
                    -3000:
                ]
                await asyncio.sleep(0.3)
            assert ours['metalflow_bridge_reconcile_duration_seconds_count{kind="baremetalhosts"}'] >= 1
            assert 'metalflow_bridge_queue_depth{kind="baremetalhosts"}' in ours
            # the bridge started the host's workflow, and its client's RPCs show in the SDK metrics
            desc = await operations.handle_for(client, ref).describe()
            assert desc.workflow_type == "HostWorkflow" and desc.status == WorkflowExecutionStatus.RUNNING
            sdk = await asyncio.to_thread(scrape, sdk_port)
            assert any(
                k.startswith("temporal_request_total") and "StartWorkflowExecution" in k for k in sdk
            ), sdk
        finally:
            bridge.stop()
            with contextlib.suppress(Exception):
                await operations.handle_for(client, ref).terminate("test over")
