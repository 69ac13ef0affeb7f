"""Bridge throughput: create BareMetalHosts, time until each HostWorkflow has started.

Runs the real parts on loopback: the Temporal dev server, the control-plane worker and the
test bed's real kube-apiserver with etcd and the controller manager (testbed/kube.py; each in
its own process, as deployed) and the bridge with its RelatedWatches (as k8s_bridge/main.py
runs them), with rbac.yaml's ServiceAccount token. The hosts carry the paused annotation, so
their workflows start (the figure measured) and then wait without BMC traffic. The objects
are created by another process (its threads would otherwise take the bridge's GIL):

- burst (`--hosts N`): as fast as `--creators` threads go, the bridge running. With
  `--backlog` all are created first and the bridge started after, so that its rate is not
  the creator's. The bridge's start rate (workflows started per second between the 10th and
  90th percentile start, server times) is compared with the raw rate: the same number of
  `start_workflow` calls as the bridge makes them, as many at once as it has reconciles,
  straight against the same dev server, half before the bridge's and half after (the load
  of a shared machine drifts).
- steady (`--rate R --duration S`): R objects per second for S seconds, each create due at
  its own time on a clock; the achieved create rate is printed, since a late creator would
  flatter the latencies.

Each phase starts once the worker has caught up with the last, and the CPU seconds each
process spent in it are printed: on 2 shared cores a rate is mostly a CPU budget. Prints
figures; asserts nothing.
Run: .venv/bin/python -m bench.bridge [--hosts 1000 [--backlog] | --rate 50 --duration 60]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
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
from k8s_bridge.controller import THREADS, Bridge, RelatedWatch
from k8s_bridge.main import BRIDGE_WORKERS, RELATED
from metalflow.api.bmh import host_from_manifest
from metalflow.client import operations
from metalflow.runtime.kube import api_client
from metalflow.runtime.settings import Settings
from testbed.kube import ControlPlane, install_metalflow
from testbed.processes import Process, free_port
from testbed.temporal import start_dev_server

NS = "bench"


def manifest(i: int, namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {
            "name": f"bench-{i:05d}",
            "namespace": namespace,
            "annotations": {"baremetalhost.metal3.io/paused": ""},
        },
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


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    return {name: process_usage(pid)[0] for name, pid in pids.items()}


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> str:
    return ", ".join(f"{name} {after[name] - before[name]:.1f}" for name in before)


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


def create_hosts(
    kubeconfig: str, hosts: int, creators: int, rate: float | None
) -> tuple[dict[str, float], float]:
    """In a process of its own: create the objects, each at `start + i / rate` when paced.
    Returns when each create returned, and the worst lateness against its due time."""
    cfg = k8s.Configuration()
    config.load_kube_config(kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = creators  # one kept connection per creating thread
    co = k8s.CustomObjectsApi(k8s.ApiClient(cfg))
    created: dict[str, float] = {}
    late = [0.0]
    counter, lock = itertools.count(), threading.Lock()
    start = time.time() + 0.2

    def creator() -> None:
        while True:
            with lock:
                i = next(counter)
            if i >= hosts:
                return
            if rate:
                due = start + i / rate
                time.sleep(max(due - time.time(), 0.0))
                late[0] = max(late[0], time.time() - due)
            m = manifest(i)
            co.create_namespaced_custom_object("metal3.io", "v1alpha1", NS, "baremetalhosts", m)
            created[f"host/{NS}/{m['metadata']['name']}"] = time.time()

    with ThreadPoolExecutor(creators) as pool:
        for f in [pool.submit(creator) for _ in range(creators)]:
            f.result()
    return created, late[0]


async def started_times(client: Client, namespace: str, want: int) -> dict[str, float]:
    """Server start time of each HostWorkflow of NAMESPACE's hosts, once WANT have started.
    Listing costs the dev server CPU, so callers list once they expect all to be there."""
    started: dict[str, float] = {}
    query = f'WorkflowType="HostWorkflow" AND HostNamespace="{namespace}"'
    while len(started) < want:
        try:
            async for wf in client.list_workflows(query, rpc_timeout=timedelta(seconds=60)):
                if wf.start_time:
                    started[wf.id] = wf.start_time.timestamp()
        except RPCError as err:  # a loaded dev server's visibility is slow: ask again
            print(f"  (listing workflows: {err}; again)", flush=True)
        if len(started) < want:
            await asyncio.sleep(2)  # start times are the server's: rare polls lose nothing
    return started


async def settle(pid: int) -> None:
    """Wait until the process (the worker) has caught up: no phase pays for the last one's tasks."""
    while True:
        cpu = process_usage(pid)[0]
        await asyncio.sleep(1)
        if process_usage(pid)[0] - cpu < 0.05:
            return


async def raw_rate(
    client: Client, settings: Settings, ns: str, hosts: int, concurrency: int
) -> tuple[float, float]:
    """The same starts as the bridge makes (operations.start: type, input, memo, search
    attributes), CONCURRENCY at once, with nothing else in the way: (10th-90th rate, wall s)."""
    parsed = [host_from_manifest(manifest(i, ns)) for i in range(hosts)]
    sem = asyncio.Semaphore(concurrency)
    options = operations.StartOptions(memo={"uid": "raw"}, paused=True)

    async def one(host: Any) -> None:
        async with sem:
            await operations.start(client, host, settings, options)

    t0 = time.time()
    await asyncio.gather(*(one(h) for h in parsed))
    wall = time.time() - t0
    rate, _ = steady_rate(list((await started_times(client, ns, hosts)).values()))
    return rate, wall


async def main(
    hosts: int, with_worker: bool, bridge_workers: int, creators: int, rate: float | None, backlog: bool
) -> None:
    print(preamble("bench.bridge"), flush=True)
    picked, took = traced()
    pool_full = PoolFull()
    logging.getLogger("urllib3.connectionpool").addHandler(pool_full)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        temporal = start_dev_server(root, port=port, ui_port=None)
        try:
            for attempt in range(30):  # the port opens before the frontend is healthy
                try:
                    client = await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
                    break
                except RuntimeError:
                    if attempt == 29:
                        raise
                    await asyncio.sleep(1)
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
                with k8s.ApiClient(admin_cfg) as admin:
                    k8s.CoreV1Api(admin).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NS)))
                # the product's client factory, rbac.yaml's ServiceAccount token, a connection per thread
                kc = api_client(settings, connections=min(bridge_workers, THREADS) + 1 + len(RELATED))
                bridge = Bridge(kc, client, settings, workers=bridge_workers, resync_seconds=600)
                # as deployed (k8s_bridge/main.py): the bridge reads related objects from their watches
                related = [RelatedWatch(kc, bridge, plural, resync_seconds=600) for plural in RELATED]
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

                    async def run_bridge() -> asyncio.Future[Any]:
                        runner = asyncio.gather(bridge.run(), *(w.run() for w in related))
                        while not all(w.synced for w in related):
                            await asyncio.sleep(0.1)
                        return runner

                    pids = {
                        "dev server": temporal.pid,
                        "worker": worker.pid,
                        "bridge+bench": os.getpid(),
                        **{p.name: p.pid for p in cp.processes},
                    }
                    raw: list[tuple[float, float]] = []
                    if not rate:  # half the raw starts before the bridge's, half after: the load drifts
                        await settle(worker.pid)
                        raw.append(await raw_rate(client, settings, "raw-1", hosts // 2, bridge_workers))
                    await settle(worker.pid)
                    cpu0 = cpu_seconds(pids)
                    runner = None if backlog else await run_bridge()
                    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as proc:
                        created, late = await asyncio.get_running_loop().run_in_executor(
                            proc, create_hosts, str(cp.admin_kubeconfig), hosts, creators, rate
                        )
                    since, what = created, "CR create"  # what each start's latency counts from
                    if runner is None:  # a backlog: every object is there when the bridge starts
                        since, what = dict.fromkeys(created, time.time()), "bridge start"
                        cpu0 = cpu_seconds(pids)
                        runner = await run_bridge()
                    while bridge.reconciled < hosts:
                        await asyncio.sleep(0.1)
                    started = await started_times(client, NS, hosts)
                    cpu1 = cpu_seconds(pids)
                    first = min(created.values())  # the first create returned (a due time, paced)
                    created_all = max(created.values()) - first
                    all_started = max(started.values()) - min(since.values())
                    lat = [max(started[w] - since[w], 0.0) for w in created]
                    bridge_rate, span = steady_rate(list(started.values()))
                    usage = {p.name: process_usage(p.pid) for p in cp.processes}
                    shape = (
                        f"{rate:g}/s for {hosts / rate:g} s" if rate else "backlog" if backlog else "burst"
                    )
                    print(
                        f"bridge: {hosts} BareMetalHosts, {shape} (2 cores, dev server, kube-apiserver "
                        f"{cp.version}, {'with' if with_worker else 'no'} worker, "
                        f"{bridge_workers} reconciles in flight)"
                    )
                    print(
                        f"  control plane + CRDs + RBAC ready in {ready_in:.1f}s; created all objects in "
                        f"{created_all:.1f}s ({(hosts - 1) / created_all:.1f}/s achieved from "
                        f"{creators} threads, "
                        f"latest create {late * 1000:.0f} ms behind its due time); "
                        f"all workflows started {all_started:.1f}s after the first {what}"
                    )
                    print(
                        f"  {what} -> workflow start: p50 {pct(lat, 50) * 1000:.0f} ms, "
                        f"p99 {pct(lat, 99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms"
                    )
                    wait = [max(picked[w] - since[w], 0.0) for w in created]
                    print(
                        f"  {what} -> bridge picks it up: p50 {pct(wait, 50) * 1000:.0f} ms, "
                        f"p99 {pct(wait, 99) * 1000:.0f} ms; one reconcile takes "
                        f"p50 {pct(took, 50) * 1000:.0f} ms, p99 {pct(took, 99) * 1000:.0f} ms"
                    )
                    print(
                        f"  bridge start rate: {bridge_rate:.0f} workflows started/s (10th-90th percentile "
                        f"start, {span:.1f}s); reconciles: {bridge.reconciled}; client connections opened "
                        f"and discarded (pool full): {pool_full.count}"
                    )
                    print(
                        "  control plane at the end: "
                        + ", ".join(f"{n} {cpu:.0f} CPU-s, peak {mib} MiB" for n, (cpu, mib) in usage.items())
                    )
                    print(f"  CPU-s while the bridge started them: {cpu_spent(cpu0, cpu1)}")
                    for c in (bridge, *related):
                        c.stop()
                    runner.cancel()
                    await asyncio.gather(runner, return_exceptions=True)
                    if not rate:
                        await settle(worker.pid)
                        cpu2 = cpu_seconds(pids)
                        raw.append(
                            await raw_rate(client, settings, "raw-2", hosts - hosts // 2, bridge_workers)
                        )
                        raw_mean = statistics.mean(r for r, _ in raw)
                        print(
                            f"  raw start_workflow, {hosts // 2} before and {hosts - hosts // 2} after, "
                            f"{bridge_workers} in flight, same server: "
                            + " and ".join(f"{r:.0f}/s (all in {wall:.1f}s)" for r, wall in raw)
                            + f" (10th-90th percentile start); bridge/raw {bridge_rate / raw_mean:.2f}"
                        )
                        print(f"  CPU-s during the second raw starts: {cpu_spent(cpu2, cpu_seconds(pids))}")
                    print(f"  at {datetime.now():%H:%M:%S}")
                finally:
                    worker.stop()
                kc.close()
            finally:
                cp.stop()
        finally:
            temporal.stop()
    print(f"after: {load()}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--hosts", type=int, default=1000, help="burst: objects created as fast as possible")
    p.add_argument("--rate", type=float, help="steady: objects created per second (with --duration)")
    p.add_argument("--duration", type=float, default=60, help="steady: seconds of creating")
    p.add_argument("--no-worker", action="store_true", help="start workflows but run none of them")
    p.add_argument("--bridge-workers", type=int, default=BRIDGE_WORKERS, help="concurrent reconciles")
    p.add_argument("--creators", type=int, default=8, help="threads creating the BareMetalHosts")
    p.add_argument("--backlog", action="store_true", help="burst: create all, then start the bridge")
    args = p.parse_args()
    n = round(args.rate * args.duration) if args.rate else args.hosts
    asyncio.run(main(n, not args.no_worker, args.bridge_workers, args.creators, args.rate, args.backlog))
