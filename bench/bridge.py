"""Bridge throughput: create N BareMetalHosts, time until every HostWorkflow has started.

Runs the real parts on loopback: the Temporal dev server, the control-plane worker and the
test bed's real kube-apiserver with etcd and the controller manager (testbed/kube.py; each in
its own process, as deployed) and the bridge, with rbac.yaml's ServiceAccount token. The hosts
carry the paused annotation, so their workflows start (the figure measured) and then wait without BMC traffic.
Prints figures; asserts nothing.
Run: .venv/bin/python -m bench.bridge [--hosts 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.context import load, preamble
from k8s_bridge import controller
from k8s_bridge.controller import Bridge
from metalflow.runtime.settings import Settings
from testbed.kube import ControlPlane, install_metalflow
from testbed.processes import Process, free_port
from testbed.temporal import start_dev_server

NS = "bench"


def manifest(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": f"bench-{i:05d}", "annotations": {"baremetalhost.metal3.io/paused": ""}},
        "spec": {
            "online": True,
            "bootMACAddress": f"52:54:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
            "bmc": {
                "address": f"redfish+http://192.0.2.1:8000/redfish/v1/Systems/{i}",
                "credentialsName": "bmc",
            },
        },
    }


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 1 else values[0]


def traced() -> tuple[dict[str, float], list[float]]:
    """Wrap the bridge's reconcile to record when each object was first picked up, and durations."""
    first: dict[str, float] = {}
    took: list[float] = []
    inner = controller.reconcile

    async def wrapper(obj: dict[str, Any], *args: Any) -> Any:
        t0 = time.time()
        first.setdefault(f"host/{NS}/{obj['metadata']['name']}", t0)
        try:
            return await inner(obj, *args)
        finally:
            took.append(time.time() - t0)

    controller.reconcile = wrapper  # type: ignore[assignment]
    return first, took


async def main(hosts: int, with_worker: bool, bridge_workers: int) -> None:
    print(preamble("bench.bridge"), flush=True)
    picked, took = traced()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        temporal = start_dev_server(root, port=port, ui_port=None)
        try:
            settings = Settings(temporal_address=f"127.0.0.1:{port}", state_dir=root, task_queue="bench")
            client = await Client.connect(settings.temporal_address, data_converter=pydantic_data_converter)
            cp = ControlPlane(root / "control-plane").__enter__()
            try:
                bridge_kubeconfig, _ = install_metalflow(cp, root)
                admin = config.new_client_from_config(str(cp.admin_kubeconfig))
                k8s.CoreV1Api(admin).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NS)))
                kc = config.new_client_from_config(str(bridge_kubeconfig))
                co = k8s.CustomObjectsApi(admin)
                bridge = Bridge(kc, client, settings, workers=bridge_workers, resync_seconds=600)
                # Without the worker the figures isolate the bridge: no workflow runs compete.
                worker = Process(
                    "worker",
                    [sys.executable, "-m", "metalflow", "worker"] if with_worker else ["sleep", "3600"],
                    root / "worker.log",
                    env={
                        "METALFLOW_TEMPORAL_ADDRESS": settings.temporal_address,
                        "METALFLOW_TASK_QUEUE": settings.task_queue,
                        "METALFLOW_STATE_DIR": str(root),
                    },
                )
                try:
                    runner = asyncio.create_task(bridge.run())
                    created: dict[str, float] = {}
                    start = time.time()
                    for i in range(hosts):
                        m = manifest(i)
                        await asyncio.to_thread(
                            co.create_namespaced_custom_object,
                            "metal3.io",
                            "v1alpha1",
                            NS,
                            "baremetalhosts",
                            m,
                        )
                        created[f"host/{NS}/{m['metadata']['name']}"] = time.time()
                    created_all = time.time() - start
                    started: dict[str, float] = {}
                    while len(started) < hosts:
                        async for wf in client.list_workflows('WorkflowType="HostWorkflow"'):
                            if wf.id in created and wf.start_time:
                                started[wf.id] = wf.start_time.timestamp()
                        await asyncio.sleep(2)  # start times are the server's: rare polls lose nothing
                    all_started = max(started.values()) - start
                    lat = [max(started[w] - created[w], 0.0) for w in created]
                    print(
                        f"bridge: {hosts} BareMetalHosts (2 cores, dev server, kube-apiserver {cp.version}, "
                        f"{'with' if with_worker else 'no'} worker)"
                    )
                    print(
                        f"  created all objects in {created_all:.1f}s; "
                        f"all workflows started {all_started:.1f}s after the first create"
                    )
                    print(
                        f"  CR create -> workflow start: p50 {pct(lat, 50) * 1000:.0f} ms, "
                        f"p99 {pct(lat, 99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms"
                    )
                    wait = [max(picked[w] - created[w], 0.0) for w in created]
                    print(
                        f"  CR create -> bridge picks it up: p50 {pct(wait, 50) * 1000:.0f} ms, "
                        f"p99 {pct(wait, 99) * 1000:.0f} ms; one reconcile takes "
                        f"p50 {pct(took, 50) * 1000:.0f} ms, p99 {pct(took, 99) * 1000:.0f} ms"
                    )
                    print(f"  reconciles: {bridge.reconciled}; at {datetime.now():%H:%M:%S}")
                    bridge.stop()
                    runner.cancel()
                    await asyncio.gather(runner, return_exceptions=True)
                finally:
                    worker.stop()
                kc.close()
                admin.close()
            finally:
                cp.stop()
        finally:
            temporal.stop()
    print(f"after: {load()}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--no-worker", action="store_true", help="start workflows but run none of them")
    p.add_argument("--bridge-workers", type=int, default=32, help="concurrent reconciles")
    args = p.parse_args()
    asyncio.run(main(args.hosts, not args.no_worker, args.bridge_workers))
