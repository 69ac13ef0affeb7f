"""Bridge throughput: create N BareMetalHosts, time until every HostWorkflow has started.

Runs the real parts on loopback: the Temporal dev server, the control-plane worker and the
test bed's real kube-apiserver with etcd and the controller manager (testbed/kube.py; each in
its own process, as deployed) and the bridge, with rbac.yaml's ServiceAccount token. The hosts
carry the paused annotation, so their workflows start (the figure measured) and then wait without BMC traffic.
Objects are created from several threads at once (a burst the bridge cannot keep up with), so
the middle of the run shows the rate the bridge sustains with a backlog: workflows started per
second between the 10th and the 90th percentile start. The control plane's processes are
sampled for CPU time and peak memory at the end. Prints figures; asserts nothing.
Run: .venv/bin/python -m bench.bridge [--hosts 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from bench.context import load, preamble
from k8s_bridge import controller
from k8s_bridge.controller import Bridge
from metalflow.runtime.kube import api_client
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


def steady_rate(starts: list[float]) -> tuple[float, float]:
    """Workflows started per second between the 10th and 90th percentile start, and that span."""
    ordered = sorted(starts)
    lo, hi = ordered[len(ordered) // 10], ordered[len(ordered) * 9 // 10]
    n = len(ordered) * 9 // 10 - len(ordered) // 10
    return (n / (hi - lo) if hi > lo else float("inf")), hi - lo


def process_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and peak resident memory (MiB) of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    return cpu, hwm // 1024


class PoolFull(logging.Handler):
    """Counts urllib3's "Connection pool is full, discarding connection": each is a TLS
    connection opened for one request and thrown away (a client pool smaller than its threads)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Connection pool is full" in record.getMessage():
            self.count += 1


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


async def main(hosts: int, with_worker: bool, bridge_workers: int, creators: int) -> None:
    print(preamble("bench.bridge"), flush=True)
    picked, took = traced()
    pool_full = PoolFull()
    logging.getLogger("urllib3.connectionpool").addHandler(pool_full)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        temporal = start_dev_server(root, port=port, ui_port=None)
        try:
            client = await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
            t0 = time.monotonic()
            cp = ControlPlane(root / "control-plane").__enter__()
            try:
                bridge_kubeconfig, _ = install_metalflow(cp, root)
                ready_in = time.monotonic() - t0
                settings = Settings(
                    temporal_address=f"127.0.0.1:{port}",
                    state_dir=root,
                    task_queue="bench",
                    kubeconfig=bridge_kubeconfig,
                )
                admin_cfg = k8s.Configuration()
                config.load_kube_config(str(cp.admin_kubeconfig), client_configuration=admin_cfg)
                admin_cfg.connection_pool_maxsize = creators  # one kept connection per creating thread
                admin = k8s.ApiClient(admin_cfg)
                k8s.CoreV1Api(admin).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NS)))
                # the product's client factory, rbac.yaml's ServiceAccount token, a connection per thread
                kc = api_client(settings, connections=bridge_workers + 1)
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

                    def create(i: int) -> None:
                        m = manifest(i)
                        co.create_namespaced_custom_object("metal3.io", "v1alpha1", NS, "baremetalhosts", m)
                        created[f"host/{NS}/{m['metadata']['name']}"] = time.time()

                    start = time.time()
                    loop = asyncio.get_running_loop()
                    with ThreadPoolExecutor(creators) as pool:
                        await asyncio.gather(*(loop.run_in_executor(pool, create, i) for i in range(hosts)))
                    created_all = time.time() - start
                    started: dict[str, float] = {}
                    while len(started) < hosts:
                        try:
                            async for wf in client.list_workflows(
                                'WorkflowType="HostWorkflow"', rpc_timeout=timedelta(seconds=60)
                            ):
                                if wf.id in created and wf.start_time:
                                    started[wf.id] = wf.start_time.timestamp()
                        except RPCError as err:  # a loaded dev server's visibility is slow: ask again
                            print(f"  (listing workflows: {err}; again)", flush=True)
                        await asyncio.sleep(2)  # start times are the server's: rare polls lose nothing
                    all_started = max(started.values()) - start
                    lat = [max(started[w] - created[w], 0.0) for w in created]
                    rate, span = steady_rate(list(started.values()))
                    usage = {p.name: process_usage(p.pid) for p in cp.processes}
                    print(
                        f"bridge: {hosts} BareMetalHosts (2 cores, dev server, kube-apiserver {cp.version}, "
                        f"{'with' if with_worker else 'no'} worker, {bridge_workers} reconciles in flight)"
                    )
                    print(
                        f"  control plane + CRDs + RBAC ready in {ready_in:.1f}s; created all objects in "
                        f"{created_all:.1f}s ({hosts / created_all:.0f}/s from {creators} threads); "
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
                    print(
                        f"  steady rate: {rate:.0f} workflows started/s (10th-90th percentile start, "
                        f"{span:.1f}s); reconciles: {bridge.reconciled}; client connections opened "
                        f"and discarded (pool full): {pool_full.count}"
                    )
                    print(
                        "  control plane at the end: "
                        + ", ".join(f"{n} {cpu:.0f} CPU-s, peak {mib} MiB" for n, (cpu, mib) in usage.items())
                    )
                    print(f"  at {datetime.now():%H:%M:%S}")
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
    p.add_argument("--creators", type=int, default=8, help="threads creating the BareMetalHosts")
    args = p.parse_args()
    asyncio.run(main(args.hosts, not args.no_worker, args.bridge_workers, args.creators))
