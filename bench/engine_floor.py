"""The engine's floor: what Temporal alone costs for a host's lifecycle, with nothing of metalflow's.

Issue #28 asks for at most 0.25 CPU-s of control plane (worker + server) per host lifecycle, with
every step kept a child workflow. This bench measures the least any implementation of that shape
can spend on this machine: a host workflow whose steps are child workflows calling activities
that return at once (no BMC, no agent, no status, no slot, payloads of a few bytes), run by a
worker built as metalflow's is (its data converter, its sandbox, its cache) against the same
engine `bench.fleet` starts. Shapes, as data (`SHAPES`):

- `minimum`: the calls a host cannot do without (validate the BMC; power on and collect the
  inventory; clean; write the image, write the config drive, boot from disk), four steps as
  child workflows: the floor under the issue's own conditions;
- `one-workflow`: the same calls in the host's own workflow: what giving up child steps saves;
- `shipped`: the activity counts metalflow runs today for a host started from a script or a fleet
  (slot request and power watch in the host, 1 + 3 + 1 + 6 in the steps), without its signals;
- `shipped+payload`: the same with 3 KB carried into every step and activity (metalflow's specs);
- `shipped+status`: and a search attribute upsert and a memo change at every step (a state
  change: each task that changes visibility costs the server a visibility write).

Prints per host, for each shape: control-plane CPU (worker + server) with its parts, history
events and workflow tasks, and the server's CPU per workflow task; medians of `--runs`.
Asserts nothing. Run: .venv/bin/python -m bench.engine_floor [--hosts 200] [--limit 20] [--stack]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, WorkflowIDReusePolicy

QUEUE = "floor"
TIMEOUT = timedelta(minutes=1)


@dataclass(frozen=True)
class Shape:
    """A host lifecycle's shape: activities in the host's own workflow, then per step."""

    name: str
    own: int
    steps: tuple[int, ...]
    children: bool
    payload: int = 0  # bytes carried into every step and activity (metalflow's specs: 2-4 KB)
    upserts: int = 0  # search attribute upserts at every step, in its task (metalflow's HostState)
    memo: bool = False  # a memo change at every step (metalflow's status line)


SHAPES = (
    Shape("minimum", own=0, steps=(1, 2, 1, 3), children=True),
    Shape("one-workflow", own=0, steps=(1, 2, 1, 3), children=False),
    Shape("shipped", own=2, steps=(1, 3, 1, 6), children=True),
    Shape("shipped+payload", own=2, steps=(1, 3, 1, 6), children=True, payload=3000),
    Shape("shipped+status", own=2, steps=(1, 3, 1, 6), children=True, payload=3000, upserts=1, memo=True),
)


def describe(shape: Shape) -> str:
    where = " as child workflows" if shape.children else " in the host workflow"
    extra = [f"{shape.payload} B into each"] if shape.payload else []
    extra += [f"{shape.upserts} search attribute upsert a step"] if shape.upserts else []
    extra += ["a memo change a step"] if shape.memo else []
    tail = "".join(", " + e for e in extra)
    return f"shape {shape.name} (own {shape.own}, steps {list(shape.steps)}{where}{tail})"


def runs_per_host(shape: Shape) -> int:
    return 1 + len(shape.steps) * shape.children


def tasks_per_host(shape: Shape) -> int:
    """Workflow tasks a host of this shape takes: the start, one per activity's completion, and
    per child step two in the host (the child started, the child closed) and one more in the child."""
    if not shape.children:
        return 1 + shape.own + sum(shape.steps)
    return 1 + shape.own + 2 * len(shape.steps) + sum(1 + calls for calls in shape.steps)


STATE = SearchAttributeKey.for_keyword("HostState")  # registered by the dev server metalflow starts


@activity.defn(name="floor.call")
async def call(n: int, pad: str) -> int:
    """Returns at once: the engine's cost of an activity, nothing else's."""
    return n


async def _calls(count: int, pad: str) -> None:
    for i in range(count):
        await workflow.execute_activity("floor.call", args=[i, pad], start_to_close_timeout=TIMEOUT)


@workflow.defn(name="FloorStep")
class FloorStep:
    @workflow.run
    async def run(self, calls: int, pad: str) -> None:
        await _calls(calls, pad)


@workflow.defn(name="FloorHost")
class FloorHost:
    @workflow.run
    async def run(self, shape: dict[str, Any]) -> None:
        pad = "x" * shape["payload"]
        await _calls(shape["own"], pad)
        for i, calls in enumerate(shape["steps"]):
            for u in range(shape["upserts"]):
                workflow.upsert_search_attributes([STATE.value_set(f"step-{i}-{u}")])
            if shape["memo"]:
                workflow.upsert_memo({"line": f"step-{i}"})
            if shape["children"]:
                await workflow.execute_child_workflow(
                    FloorStep.run, args=[calls, pad], id=f"{workflow.info().workflow_id}/{i}"
                )
            else:
                await _calls(calls, pad)


async def serve() -> None:
    """The floor's worker (its own process, so its CPU is its own): built as metalflow's."""
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    from bench import engine_floor as this  # not __main__: the sandbox imports a workflow's module
    from metalflow.runtime.settings import Settings
    from metalflow.runtime.temporal import connect
    from workflows import sandbox_runner

    settings = Settings()
    client = await connect(settings)
    worker = Worker(
        client,
        task_queue=QUEUE,
        workflows=[this.FloorHost, this.FloorStep],
        activities=[this.call],
        max_cached_workflows=settings.max_cached_workflows,
        workflow_runner=sandbox_runner() if settings.workflow_sandbox else UnsandboxedWorkflowRunner(),
    )
    await worker.run()


async def run_hosts(
    client: Client, shape: Shape, prefix: str, hosts: int, limit: int, task_queue: str = QUEUE
) -> None:
    """`hosts` lifecycles of `shape`, at most `limit` at once (as a fleet's provisioning limit)."""
    gate = asyncio.Semaphore(limit)

    async def one(i: int) -> None:
        async with gate:
            await client.execute_workflow(
                FloorHost.run,
                dataclasses.asdict(shape),
                id=f"{prefix}/{i}",
                task_queue=task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )

    await asyncio.gather(*(one(i) for i in range(hosts)))


async def listed(client: Client, query: str, expected: int, timeout: float = 60.0) -> None:
    """Wait until visibility lists every closed run (the dev server writes it after the close)."""
    deadline = time.monotonic() + timeout
    while (n := (await client.count_workflows(query)).count) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"visibility lists {n} of {expected} runs for {query!r}")
        await asyncio.sleep(0.5)


async def measure(kind: str, shape: Shape, hosts: int, limit: int) -> dict[str, float]:
    from bench.fleet import cpu_seconds, start_engine
    from bench.history_counts import count
    from metalflow.runtime.settings import Settings
    from metalflow.runtime.temporal import connect
    from testbed.processes import Process, free_port

    with tempfile.TemporaryDirectory(prefix="metalflow-floor-") as tmp:
        root = Path(tmp)
        port = free_port()
        engine = start_engine(kind, root, port, "FULL")
        env = {"METALFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{port}", **engine.client_env}
        os.environ.update(env)
        worker = Process(
            "floor worker", [sys.executable, "-m", "bench.engine_floor", "--worker"], root / "w.log", env
        )
        try:
            client = await connect(Settings())
            try:  # imports, caches, first polls
                await asyncio.wait_for(run_hosts(client, shape, "warm", min(hosts, 20), limit), 120)
            except TimeoutError:
                tail = worker.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the floor's worker ran no host in 120 s; its log:\n{tail}") from None
            server0, worker0 = engine.cpu(), cpu_seconds(worker.pid)
            start = time.monotonic()
            await run_hosts(client, shape, "floor", hosts, limit)
            elapsed = time.monotonic() - start
            server, work = engine.cpu() - server0, cpu_seconds(worker.pid) - worker0
            query = 'WorkflowId STARTS_WITH "floor/"'
            await listed(
                client,
                query + ' AND ExecutionStatus = "Completed"',
                hosts * (1 + len(shape.steps) * shape.children),
            )
            counts = await count(client, query)
        finally:
            worker.stop()
            engine.stop()
    tasks = counts.workflow_tasks / hosts
    return {
        "plane": (server + work) / hosts,
        "worker": work / hosts,
        "server": server / hosts,
        "events": counts.events / hosts,
        "tasks": tasks,
        "activities": sum(counts.activities.values()) / hosts,
        "ms_per_task": 1000 * server / max(counts.workflow_tasks, 1),
        "rate": hosts / (elapsed / 60),
    }


async def main(a: argparse.Namespace) -> None:
    from bench.context import load, preamble

    print(preamble("bench.engine_floor"), flush=True)
    print(f"  {a.hosts} hosts a run, {a.limit} at once, {a.runs} runs a shape, {os.cpu_count()} cores")
    for kind in ("dev", "stack") if a.stack else ("dev",):
        engine = "dev server (SQLite)" if kind == "dev" else "temporal-server + PostgreSQL"
        for shape in SHAPES:
            if a.shape and shape.name not in a.shape:
                continue
            runs = [await measure(kind, shape, a.hosts, a.limit) for _ in range(a.runs)]
            m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            runs_line = ", ".join(f"{r['plane']:.3f}" for r in runs)
            print(
                f"{engine}, {describe(shape)}:\n"
                f"  control plane {m['plane']:.3f} CPU-s/host (runs {runs_line}): "
                f"worker {m['worker']:.3f} + server {m['server']:.3f}; {m['events']:.0f} events, "
                f"{m['tasks']:.1f} workflow tasks, {m['activities']:.1f} activities per host; "
                f"server {m['ms_per_task']:.1f} ms CPU per workflow task; {m['rate']:.0f} hosts/min",
                flush=True,
            )
    print(f"after: {load()}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=200)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--shape", action="append", choices=[s.name for s in SHAPES], help="only these shapes")
    p.add_argument("--stack", action="store_true", help="then on temporal-server + PostgreSQL too")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    asyncio.run(serve() if args.worker else main(args))
