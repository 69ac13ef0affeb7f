"""Fleet throughput: provision N emulated hosts through one FleetWorkflow, full lifecycle.

Real parts on loopback: the Temporal dev server (SQLite file, WAL), the control-plane worker
as its own process (`metalflow worker`, so its peak RSS is its own), sushy-emulator --fake
with N systems, the boot server, and N emulated servers whose agents come up on their task
queues (file-backed sparse disks) only when their BMC network-boots them. Every host is
registered, inspected, cleaned, written with a real image over HTTP and booted from disk.
Prints hosts/minute (hosts that reached provisioned; failed and never-settled apart), p50/p99
per step, worker peak RSS and the dev server's CPU, with the command and the load; asserts nothing.
Run: .venv/bin/python -m bench.fleet --hosts 100 [--limit 20] [--stack: then on temporal-server +
PostgreSQL (testbed/stack.py), and both side by side: hosts/min, server + database CPU per host]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.context import load, preamble
from bench.history_counts import count
from metalflow.api.fleet import LIMITER_REQUEST, FleetProgress
from metalflow.api.models import ProvisioningState as S
from metalflow.client.fleet import start_fleet
from metalflow.runtime.settings import Settings
from metalflow.runtime.temporal import connect
from testbed.datacenter import Datacenter
from testbed.processes import Process, free_port
from testbed.temporal import start_dev_server

STEPS = ("RegisterHost", "InspectHost", "CleanHost", "DeployHost")
TICKS = os.sysconf("SC_CLK_TCK")
DEV_ARGS: list[str] = []  # --dev-arg: extra `temporal server start-dev` arguments, for tuning runs


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime (and, with `children`, that of its exited, reaped children: cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = int(fields[11]) + int(fields[12])
    return (own + (int(fields[13]) + int(fields[14]) if children else 0)) / TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tally(result: FleetProgress, total: int) -> dict[str, int]:
    """Each host counted once, by where it ended: only a host in `provisioned` without an error is
    provisioned. FleetProgress.settled is not that: it counts hosts in error and hosts whose
    workflow ended, and a timed-out fleet leaves hosts that never settled at all."""
    out = {"provisioned": 0, "failed": 0, "never settled": total - len(result.hosts), "settled elsewhere": 0}
    for host in result.hosts:
        if host.error_type:
            out["failed"] += 1
        elif host.state == S.PROVISIONED:
            out["provisioned"] += 1
        elif not host.settled:
            out["never settled"] += 1
        else:
            out["settled elsewhere"] += 1
    return out


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


def activity_type(ev: Any) -> str:
    """The activity an event schedules, or the local activity a marker records ("" otherwise)."""
    if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        return str(ev.activity_task_scheduled_event_attributes.activity_type.name)
    if ev.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
        data = ev.marker_recorded_event_attributes.details.get("data")
        if data is not None and data.payloads:
            return str(json.loads(data.payloads[0].data).get("activity_type", ""))
    return ""


async def step_latencies(client: Client, workflow_ids: list[str]) -> dict[str, list[float]]:
    """Per step: seconds from the child workflow's start command to its completion, from histories."""
    out: dict[str, list[float]] = defaultdict(list)
    gate = asyncio.Semaphore(16)

    async def one(wid: str) -> None:
        async with gate:
            history = await client.get_workflow_handle(wid).fetch_history()
        started: dict[int, tuple[str, float]] = {}
        acquire: float | None = None
        for ev in history.events:
            t = ev.event_time.ToMicroseconds() / 1e6
            if ev.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
                name = ev.start_child_workflow_execution_initiated_event_attributes.workflow_type.name
                started[ev.event_id] = (name, t)
                if name == "InspectHost" and acquire is not None:
                    out["wait for a slot"].append(t - acquire)
            elif ev.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED:
                name, t0 = started[ev.child_workflow_execution_completed_event_attributes.initiated_event_id]
                out[name].append(t - t0)
            elif acquire is None and activity_type(ev) == LIMITER_REQUEST:
                acquire = t
        out["host total"].append(
            history.events[-1].event_time.ToMicroseconds() / 1e6
            - history.events[0].event_time.ToMicroseconds() / 1e6
        )

    await asyncio.gather(*(one(w) for w in workflow_ids))
    return out


async def trace(client: Client, workflow_id: str) -> None:
    """Where one host's time went: each activity's queue wait and run time, per step."""
    async for wf in client.list_workflows(f'WorkflowId STARTS_WITH "{workflow_id}/"'):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        t0 = history.events[0].event_time.ToMicroseconds() / 1e6
        print(f"  trace {wf.id}")
        scheduled: dict[int, tuple[str, float]] = {}
        for ev in history.events:
            t = ev.event_time.ToMicroseconds() / 1e6 - t0
            if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled[ev.event_id] = (ev.activity_task_scheduled_event_attributes.activity_type.name, t)
            elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                name, ts = scheduled[ev.activity_task_started_event_attributes.scheduled_event_id]
                print(f"    {ts:6.2f}s {name:24s} queued {t - ts:5.2f}s", end="")
            elif ev.event_type in (
                EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
                EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
                EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
            ):
                print(f" ends at {t:6.2f}s {EventType.Name(ev.event_type)[20:]}")
            elif ev.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                print(f"    {t:6.2f}s completed")


@dataclass
class Engine:
    """The Temporal engine a run uses: the dev server (SQLite) or the stack (temporal-server on
    PostgreSQL); `cpu()` is its processes' CPU seconds so far (PostgreSQL's backends included)."""

    name: str
    pids: Callable[[], list[int]]
    stop: Callable[[], None]
    client_env: dict[str, str] = field(default_factory=dict)  # the stack's mTLS identity
    agent_tls: Any = False

    def cpu(self) -> float:
        return sum(cpu_seconds(pid, children=True) for pid in self.pids())


def start_engine(
    kind: str, root: Path, port: int, synchronous: str, dev_args: tuple[str, ...] = ()
) -> Engine:
    if kind == "dev":
        pragmas = ("journal_mode=wal", f"synchronous={synchronous}")
        temporal = start_dev_server(root, port=port, ui_port=None, pragmas=pragmas, extra_args=dev_args)
        return Engine(
            f"dev server (SQLite WAL, synchronous={synchronous})", lambda: [temporal.pid], temporal.stop
        )
    from testbed.stack import Stack

    stack = Stack.start(root / "stack", frontend_port=port)

    def pids() -> list[int]:
        assert stack.server.proc is not None
        return [
            stack.server.proc.pid,
            stack.pg.postmaster_pid(),
            *postgres_backends(stack.pg.postmaster_pid()),
        ]

    return Engine(
        "temporal-server on PostgreSQL (mTLS)", pids, stack.stop, stack.client_env(), stack.agent_tls()
    )


def postgres_backends(postmaster: int) -> list[int]:
    """PostgreSQL's live backends and helpers (the postmaster's children)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            out.append(int(stat.parent.name))
    return out


def bench_env(root: Path, port: int, limit: int) -> dict[str, str]:
    """The worker's settings for a run under ROOT (set in this process's environment too)."""
    env = {
        "METALFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "METALFLOW_TASK_QUEUE": "bench",
        "METALFLOW_STATE_DIR": str(root / "state"),
        "METALFLOW_BOOT_DIR": str(root / "boot"),
        "METALFLOW_BOOT_SERVER_URL": f"http://127.0.0.1:{free_port()}",
        "METALFLOW_MAX_CONCURRENT_PROVISIONING": str(limit),
    }
    os.environ.update(env)
    return env


async def run(
    kind: str,
    hosts: int,
    limit: int,
    image_mib: int,
    show_trace: bool,
    synchronous: str,
    profile: Path | None = None,
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="metalflow-fleet-bench-") as tmp:
        root = Path(tmp)
        port = free_port()
        env = bench_env(root, port, limit)
        engine = start_engine(kind, root, port, synchronous, tuple(DEV_ARGS))
        env.update(engine.client_env)
        os.environ.update(engine.client_env)
        settings = Settings()
        worker = Process("worker", [sys.executable, "-m", "metalflow", "worker"], root / "worker.log", env)
        try:
            client = await connect(settings)
            t_setup = time.monotonic()
            async with Datacenter(
                settings, hosts=hosts, prefix="bench", image_mib=image_mib, agent_tls=engine.agent_tls
            ) as dc:
                setup = time.monotonic() - t_setup
                assert dc.sushy is not None
                sushy_pid = dc.sushy.process.pid
                server_cpu0, bench_cpu0 = engine.cpu(), time.process_time()
                worker_cpu0 = cpu_seconds(worker.pid)
                spy = profiler(worker.pid, profile) if profile else None
                sushy_cpu0 = cpu_seconds(sushy_pid)
                start = time.monotonic()
                handle = await start_fleet(
                    client,
                    dc.all_hosts(),
                    fleet_id="fleet/bench",
                    task_queue=settings.task_queue,
                    limit=limit,
                )
                last = ""
                result_task = asyncio.ensure_future(handle.result())
                while not result_task.done():
                    await asyncio.wait({result_task}, timeout=10)
                    now = await handle.query("progress", result_type=FleetProgress)
                    line = (
                        f"  [{kind}] {time.monotonic() - start:6.0f}s provisioned "
                        f"{now.by_state.get(S.PROVISIONED.value, 0)}/{hosts}, settled {now.settled} "
                        f"(errors included) {now.by_state}"
                    )
                    if line != last:
                        print(line, flush=True)
                        last = line
                result = result_task.result()
                elapsed = time.monotonic() - start
                server_cpu = engine.cpu() - server_cpu0
                bench_cpu = time.process_time() - bench_cpu0
                sushy_cpu = cpu_seconds(sushy_pid) - sushy_cpu0
                worker_rss = peak_rss_mib(worker.pid)
                worker_cpu = cpu_seconds(worker.pid) - worker_cpu0
                if spy:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(timeout=60)
            lat = await step_latencies(client, [f"host/default/bench-{i}" for i in range(hosts)])
            if show_trace:
                await trace(client, f"host/default/bench-{hosts - 1}")
            counts_ = await count(client)
        finally:
            worker.stop()
            engine.stop()
    counts = tally(result, hosts)
    print(
        f"fleet on {engine.name}: {hosts} hosts, limit {limit}, {image_mib} MiB raw image, "
        f"{os.cpu_count()} cores"
    )
    rate = counts["provisioned"] / (elapsed / 60)
    print(f"  datacenter setup {setup:.0f}s; fleet {elapsed:.0f}s -> {rate:.0f} hosts/min provisioned")
    print("  " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; fleet timed out: {result.timed_out}")
    for f in result.failed[:5]:
        print(f"    {f.name}: {f.error_type}: {f.error_message[:150]}")
    for name in (*STEPS, "wait for a slot", "host total"):
        values = lat.get(name, [])
        if values:
            print(f"  {name:16s} p50 {pct(values, 50):6.2f}s  p99 {pct(values, 99):6.2f}s  (n={len(values)})")
    done = max(counts["provisioned"], 1)
    plane = (worker_cpu + server_cpu) / done
    print(
        f"  control plane CPU {plane:.2f} s/host (worker {worker_cpu / done:.2f} + "
        f"{engine.name.split(' (')[0]} {server_cpu / done:.2f})"
    )
    totals = lat.get("host total", [])
    print("\n".join(counts_.report(hosts, host_seconds=statistics.mean(totals) if totals else 0.0)))
    print(f"  worker peak RSS {worker_rss:.0f} MiB, worker CPU {worker_cpu:.0f}s")
    print(
        f"  {engine.name} CPU {server_cpu:.0f}s over {elapsed:.0f}s "
        f"({100 * server_cpu / elapsed:.0f}% of one core)"
    )
    print(f"  sushy-emulator CPU {sushy_cpu:.0f}s; datacenter process (agents, boot) CPU {bench_cpu:.0f}s")
    print(f"after: {load()}", flush=True)
    return {
        "rate": rate,
        "server_cpu_per_host": server_cpu / done,
        "worker_cpu_per_host": worker_cpu / done,
        "plane_cpu_per_host": plane,
    }


def profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the worker (collapsed stacks, for `bench.profile_top`); stopped by SIGINT."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(spy), "record", "--gil", "-p", str(pid), "-r", "50", "-f", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def main(a: argparse.Namespace) -> None:
    logging.getLogger("sushy").setLevel(logging.CRITICAL)
    print(preamble("bench.fleet"), flush=True)
    figures = {}
    for kind in ("dev", "stack") if a.stack else ("dev",):
        runs = []
        for i in range(a.runs):
            if a.runs > 1:
                print(f"run {i + 1} of {a.runs} on {kind}:", flush=True)
            runs.append(await run(kind, a.hosts, a.limit, a.image_mib, a.trace, a.synchronous, a.profile))
        figures[kind] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        if a.runs > 1:
            print(
                f"{kind}: medians of {a.runs} runs: control plane CPU "
                f"{figures[kind]['plane_cpu_per_host']:.2f} s/host (runs: "
                + ", ".join(f"{r['plane_cpu_per_host']:.2f}" for r in runs)
                + f"), {figures[kind]['rate']:.0f} hosts/min",
                flush=True,
            )
    if a.stack:
        print("side by side (same fleet, one after the other in this run):")
        for kind, label in (("dev", "dev server, SQLite"), ("stack", "temporal-server, PostgreSQL")):
            f = figures[kind]
            print(
                f"  {label:28s} {f['rate']:5.0f} hosts/min; server+database CPU "
                f"{f['server_cpu_per_host']:.2f} s/host; worker CPU {f['worker_cpu_per_host']:.2f} s/host"
            )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--hosts", type=int, default=100)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--image-mib", type=int, default=16)
    p.add_argument("--trace", action="store_true", help="print where the last host's time went")
    p.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="the dev server's SQLite synchronous pragma (NORMAL: no fsync per commit in WAL mode)",
    )
    p.add_argument(
        "--stack",
        action="store_true",
        help="then the same fleet on temporal-server + PostgreSQL (testbed/stack.py), side by side",
    )
    p.add_argument("--runs", type=int, default=1, help="runs per engine; figures are their medians")
    p.add_argument("--profile", type=Path, help="py-spy the worker into this file (raw collapsed stacks)")
    p.add_argument("--dev-arg", action="append", default=[], help="extra argument for the dev server")
    args = p.parse_args()
    DEV_ARGS.extend(args.dev_arg)
    asyncio.run(main(args))
