"""Scale at rest (issue 28, target 3): N hosts adopted as externally provisioned, then resting
with their power read every `--interval` seconds, held for `--minutes`.

CERN runs about 10,000 nodes under Ironic; almost all of them rest almost all of the time, so
what a resting host costs is what the control plane costs. Real parts on loopback: the Temporal
dev server (SQLite file, WAL), the control-plane worker as its own process (`metalflow worker`,
so its CPU and RSS are its own), and sushy-emulator --fake processes holding the N systems (no
agents, no disks: nothing boots). Hosts are started at a bounded rate (adoption is timed), then
the window is measured: worker and dev-server CPU (% of one core), worker RSS, each power
check's lag behind when it was due (from the histories: timer start + interval -> the BMC read's
result recorded, as its activity's completion or its local activity's marker), history length
and continue-as-new runs, and the SQLite file's growth as bytes per host per day. Prints the
figures with the command and the load; asserts nothing. `--power-sync batched`: the hosts are
started in that mode (metalflow.api.power_sync) and the checks are read from the
PowerSyncWorkflow shards' histories (one activity a round reads all a shard's hosts).
Run: .venv/bin/python -m bench.at_rest --hosts 10000 --minutes 30 --interval 300 [--power-sync per-host]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import pickle
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from bench.context import load, preamble
from bench.fleet import cpu_seconds, pct, peak_rss_mib, start_engine
from metalflow.api.bmc import BMC_VALIDATE
from metalflow.api.host import HOST_WORKFLOW
from metalflow.api.models import BMCDetails, Host, HostRef, HostSpec, SecretRef
from metalflow.api.power_sync import BATCHED, POWER_SYNC_WORKFLOW
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from metalflow.runtime.temporal import connect
from testbed.datacenter import write_secret
from testbed.processes import Process, free_port
from testbed.sushy import FakeSystem, SushyEmulator, start_sushy

ADOPTED = "externally provisioned"
LOCAL_ACTIVITY_MARKER = "core_local_activity"  # how the SDK records a local activity's result
DAY = 86400.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def db_bytes(root: Path) -> int:
    """The dev server's SQLite file with its WAL (the WAL holds pages not yet checkpointed)."""
    return sum(p.stat().st_size for p in root.glob("temporal.db*") if p.is_file())


def start_emulators(root: Path, hosts: int, per: int, password: str) -> tuple[list[SushyEmulator], list[str]]:
    """ceil(hosts / per) emulators, systems powered on (adopted hosts run); each host's BMC address."""
    emulators: list[SushyEmulator] = []
    addresses: list[str] = []
    for k in range(math.ceil(hosts / per)):
        names = range(k * per, min(hosts, (k + 1) * per))
        systems = [
            FakeSystem(str(uuid.uuid5(uuid.NAMESPACE_URL, f"rest/{i}")), f"rest-{i}", _mac(i), "On")
            for i in names
        ]
        seed_fake_systems(root / f"sushy-{k}" / "state", systems)
        emu = start_sushy(root / f"sushy-{k}", systems, "admin", password)
        emulators.append(emu)
        addresses += [emu.system_address(s.uuid) for s in systems]
    return emulators, addresses


def seed_fake_systems(state: Path, systems: list[FakeSystem]) -> None:
    """The fake driver's state (sushy-tools' PersistentDict: pickled uuid -> system, SQLite), written
    in one transaction: the driver stores each system it does not find there in a transaction of
    its own on its first request, which for thousands outlasts the emulator's 30 s readiness wait."""
    state.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(state / "fakedriver.sqlite") as db:
        db.execute("pragma journal_mode=wal")
        db.execute("create table if not exists cache (key blob primary key not null, value blob not null)")
        db.executemany(
            "insert or replace into cache values (?, ?)",
            [(pickle.dumps(s.uuid), pickle.dumps(_fake(s))) for s in systems],
        )


def _fake(s: FakeSystem) -> dict[str, object]:
    """A system as testbed.sushy.start_sushy configures it (no external notifier)."""
    return {
        "uuid": s.uuid,
        "name": s.name,
        "power_state": s.power_state,
        "external_notifier": False,
        "nics": [{"mac": s.mac, "ip": "127.0.0.1"}],
    }


def _mac(i: int) -> str:
    return f"52:54:01:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"


async def adopt(
    client: Client, settings: Settings, addresses: list[str], creds: SecretRef, rate: float
) -> None:
    """Start one HostWorkflow per address, at most `rate` starts a second."""
    gate = asyncio.Semaphore(32)
    t0 = time.monotonic()

    async def one(i: int, address: str) -> None:
        await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        spec = HostSpec(
            bmc=BMCDetails(address=address, credentials=creds), online=True, externally_provisioned=True
        )
        async with gate:
            await operations.start(
                client, Host(ref=HostRef(namespace="default", name=f"rest-{i}"), spec=spec), settings
            )

    await asyncio.gather(*(one(i, a) for i, a in enumerate(addresses)))


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


@dataclass
class Sample:
    t: float
    worker_cpu: float
    server_cpu: float
    worker_rss: float
    db: int


@dataclass
class Histories:
    lags: list[float] = field(default_factory=list)  # result recorded - due, checks due in the window
    starts: list[float] = field(default_factory=list)  # BMC read (its workflow task) started - due
    lengths: list[int] = field(default_factory=list)  # events per open run
    bytes_per_check: list[float] = field(default_factory=list)
    runs: Counter[str] = field(default_factory=Counter)
    checks_per_host: list[int] = field(default_factory=list)
    failed: int = 0  # BMC reads that did not complete
    overdue: int = 0  # check timers due in the window that had not fired when the history was read


async def read_histories(client: Client, t0: float, t1: float, interval: int) -> Histories:
    """Every HostWorkflow run's history: the power checks due within [t0, t1] (wall clock)."""
    out = Histories()
    runs = [wf async for wf in client.list_workflows(f'WorkflowType="{HOST_WORKFLOW}"')]
    per_host: Counter[str] = Counter()
    gate = asyncio.Semaphore(16)

    async def one(wid: str, run_id: str, status: str) -> None:
        async with gate:
            history = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
        out.runs[status] += 1
        if status == "RUNNING":
            out.lengths.append(len(history.events))
        due: dict[int, float] = {}  # timer started event id -> when it was due
        fired: float | None = None  # the due time of the check timer that fired last
        task_started = 0.0  # the last workflow task's start: a local activity's read runs in it
        scheduled: dict[int, float] = {}
        started: dict[int, float] = {}
        first_check: int | None = None
        for ev in history.events:
            t = ev.event_time.ToMicroseconds() / 1e6
            kind = ev.event_type
            if kind == EventType.EVENT_TYPE_TIMER_STARTED:
                a = ev.timer_started_event_attributes
                if a.start_to_fire_timeout.seconds == interval:
                    due[ev.event_id] = t + interval
            elif kind == EventType.EVENT_TYPE_TIMER_FIRED:
                fired = due.pop(ev.timer_fired_event_attributes.started_event_id, None)
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                task_started = t
            elif kind == EventType.EVENT_TYPE_MARKER_RECORDED and fired is not None:
                if ev.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER:
                    first_check = first_check or ev.event_id
                    if t0 <= fired <= t1:
                        if ev.marker_recorded_event_attributes.HasField("failure"):
                            out.failed += 1
                        else:
                            out.lags.append(t - fired)
                            out.starts.append(task_started - fired)
                            per_host[wid] += 1
                    fired = None
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and fired is not None:
                if ev.activity_task_scheduled_event_attributes.activity_type.name == BMC_VALIDATE:
                    scheduled[ev.event_id] = fired
                    first_check = first_check or ev.event_id
                fired = None
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                sched = ev.activity_task_started_event_attributes.scheduled_event_id
                if sched in scheduled:
                    started[sched] = t
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                sched = ev.activity_task_completed_event_attributes.scheduled_event_id
                d = scheduled.pop(sched, None)
                if d is not None and t0 <= d <= t1:
                    out.lags.append(t - d)
                    out.starts.append(started.get(sched, t) - d)
                    per_host[wid] += 1
        out.failed += sum(1 for d in scheduled.values() if t0 <= d <= t1)
        # a check timer still pending although it was due in the window: overdue when read
        out.overdue += sum(1 for d in due.values() if t0 <= d <= t1) if status == "RUNNING" else 0
        if first_check is not None and per_host[wid] > 1:
            tail = [e for e in history.events if e.event_id >= first_check]
            out.bytes_per_check.append(sum(e.ByteSize() for e in tail) / max(1, _checks(tail)))

    await asyncio.gather(*(one(wf.id, wf.run_id, wf.status.name if wf.status else "") for wf in runs))
    out.checks_per_host = list(per_host.values())
    return out


async def read_shard_histories(client: Client, t0: float, t1: float, interval: int) -> Histories:
    """Batched power sync: every PowerSyncWorkflow run's rounds due within [t0, t1]. A round is
    one timer and one activity reading all the shard's hosts: each host read counts as a check,
    with its round's lag (activity completed - due) and start (activity started - due)."""
    out = Histories()
    runs = [wf async for wf in client.list_workflows(f'WorkflowType="{POWER_SYNC_WORKFLOW}"')]
    total_bytes, total_reads = 0, 0
    for wf in runs:
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        out.runs[wf.status.name if wf.status else ""] += 1
        if wf.status and wf.status.name == "RUNNING":
            out.lengths.append(len(history.events))
        total_bytes += sum(e.ByteSize() for e in history.events)
        fired: float | None = None
        rounds: dict[int, float] = {}  # activity scheduled event id -> its round's due time
        started: dict[int, float] = {}
        for ev in history.events:
            t = ev.event_time.ToMicroseconds() / 1e6
            kind = ev.event_type
            if kind == EventType.EVENT_TYPE_TIMER_STARTED:
                fired = t + ev.timer_started_event_attributes.start_to_fire_timeout.seconds
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and fired is not None:
                rounds[ev.event_id] = fired
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started[ev.activity_task_started_event_attributes.scheduled_event_id] = t
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                sched = ev.activity_task_completed_event_attributes.scheduled_event_id
                due = rounds.pop(sched, None)
                result = json.loads(ev.activity_task_completed_event_attributes.result.payloads[0].data)
                total_reads += int(result.get("read", 0))
                if due is not None and t0 <= due <= t1:
                    n = int(result.get("read", 0))
                    out.lags += [t - due] * n
                    out.starts += [started.get(sched, t) - due] * n
        out.failed += sum(1 for d in rounds.values() if t0 <= d <= t1)
    if total_reads:
        out.bytes_per_check.append(total_bytes / total_reads)
    return out


def _checks(events: list[HistoryEvent]) -> int:
    return sum(1 for e in events if e.event_type == EventType.EVENT_TYPE_TIMER_FIRED)


async def run(a: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="metalflow-rest-bench-") as tmp:
        root = Path(tmp)
        port = free_port()
        env = {
            "METALFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
            "METALFLOW_TASK_QUEUE": "bench",
            "METALFLOW_STATE_DIR": str(root / "state"),
            "METALFLOW_BOOT_DIR": str(root / "boot"),
            "METALFLOW_BOOT_SERVER_URL": f"http://127.0.0.1:{free_port()}",
            "METALFLOW_POWER_CHECK_INTERVAL_SECONDS": str(a.interval),
            "METALFLOW_HISTORY_EVENT_LIMIT": str(a.history_limit),
            "METALFLOW_POWER_SYNC": a.power_sync,
        }
        if a.cache or a.power_sync != BATCHED:  # batched: resting hosts need no cache (SDK default)
            env["METALFLOW_MAX_CACHED_WORKFLOWS"] = str(a.cache or a.hosts + 1000)
        os.environ.update(env)
        settings = Settings()
        password = uuid.uuid4().hex
        creds = SecretRef(name="bmc", namespace="default", path=str(root / "state" / "secrets" / "bmc.yaml"))
        write_secret(Path(str(creds.path)), {"username": "admin", "password": password})
        t = time.monotonic()
        emulators, addresses = await asyncio.to_thread(
            start_emulators, root, a.hosts, a.per_emulator, password
        )
        up = time.monotonic() - t
        print(f"  {len(emulators)} sushy-emulator processes, {a.hosts} systems, up in {up:.0f}s")
        engine = start_engine("dev", root, port, a.synchronous)
        worker = Process("worker", [sys.executable, "-m", "metalflow", "worker"], root / "worker.log", env)
        try:
            client = await connect(settings)
            await report(a, client, settings, engine, worker, emulators, addresses, creds, root)
        finally:
            worker.stop()
            engine.stop()
            for emu in emulators:
                emu.stop()


async def report(
    a: argparse.Namespace,
    client: Client,
    settings: Settings,
    engine: object,
    worker: Process,
    emulators: list[SushyEmulator],
    addresses: list[str],
    creds: SecretRef,
    root: Path,
) -> None:
    server_cpu = engine.cpu  # type: ignore[attr-defined]
    t_adopt, cpu_adopt = time.monotonic(), cpu_seconds(worker.pid) + server_cpu()
    await adopt(client, settings, addresses, creds, a.start_rate)
    started = time.monotonic() - t_adopt
    query = f'WorkflowType="{HOST_WORKFLOW}" AND ExecutionStatus="Running" AND HostState="{ADOPTED}"'
    adopted = 0
    while adopted < a.hosts and time.monotonic() - t_adopt < a.adopt_timeout:
        await asyncio.sleep(5)
        adopted = await count(client, query)
        print(f"  {time.monotonic() - t_adopt:6.0f}s adopted {adopted}/{a.hosts}", flush=True)
    adoption = time.monotonic() - t_adopt
    adopt_cpu = cpu_seconds(worker.pid) + server_cpu() - cpu_adopt
    print(
        f"  started {a.hosts} workflows in {started:.0f}s; {adopted} adopted after {adoption:.0f}s",
        flush=True,
    )

    def sample() -> Sample:
        return Sample(
            time.monotonic(), cpu_seconds(worker.pid), server_cpu(), rss_mib(worker.pid), db_bytes(root)
        )

    wall0, first = time.time(), sample()
    emu_cpu0 = sum(cpu_seconds(e.process.pid) for e in emulators)
    samples = [first]
    while time.monotonic() - first.t < a.minutes * 60:
        await asyncio.sleep(min(a.sample, first.t + a.minutes * 60 - time.monotonic()))
        s, p = sample(), samples[-1]
        samples.append(s)
        dt = s.t - p.t
        print(
            f"  {s.t - first.t:6.0f}s worker {100 * (s.worker_cpu - p.worker_cpu) / dt:5.1f}% "
            f"server {100 * (s.server_cpu - p.server_cpu) / dt:5.1f}% of a core; worker RSS "
            f"{s.worker_rss:.0f} MiB; SQLite {s.db / 2**20:.1f} MiB; {load()}",
            flush=True,
        )
    last, wall1 = samples[-1], time.time()
    emu_cpu = sum(cpu_seconds(e.process.pid) for e in emulators) - emu_cpu0
    window = last.t - first.t
    read = read_shard_histories if a.power_sync == BATCHED else read_histories
    hist = await read(client, wall0, wall1, a.interval)
    due = a.hosts * window / a.interval

    print(
        f"at rest on the dev server (SQLite WAL, synchronous={a.synchronous}): {a.hosts} hosts, power read "
        f"every {a.interval}s ({a.power_sync}), window {window / 60:.1f} min, {os.cpu_count()} cores"
    )
    print(
        f"  adoption: {a.hosts} starts at <= {a.start_rate:.0f}/s in {started:.0f}s; "
        f"{adopted} adopted after {adoption:.0f}s; worker + server CPU {adopt_cpu:.0f}s "
        f"({1000 * adopt_cpu / max(adopted, 1):.0f} ms per host)"
    )
    w, s_ = last.worker_cpu - first.worker_cpu, last.server_cpu - first.server_cpu
    print(
        f"  control-plane CPU at rest: worker {w:.0f}s + dev server {s_:.0f}s over {window:.0f}s = "
        f"{100 * (w + s_) / window:.1f}% of one core "
        f"(worker {100 * w / window:.1f}%, server {100 * s_ / window:.1f}%)"
    )
    print(
        f"  worker RSS: peak in the window {max(x.worker_rss for x in samples):.0f} MiB, "
        f"at the end {last.worker_rss:.0f} MiB, peak since start (VmHWM, adoption included) "
        f"{peak_rss_mib(worker.pid):.0f} MiB"
    )
    print(
        f"  sushy-emulator CPU {emu_cpu:.0f}s ({100 * emu_cpu / window:.1f}% of one core, not control plane)"
    )
    n = len(hist.lags)
    print(
        f"  power checks: {n} done that were due in the window (~{due:.0f} at exactly every "
        f"{a.interval}s: each check's timer starts once the last check is done, so lateness thins them); "
        f"failed {hist.failed}; overdue when the histories were read {hist.overdue}"
    )
    if n:
        late = sum(1 for x in hist.lags if x > 60)
        print(
            f"  check lag (BMC read recorded - due): p50 {pct(hist.lags, 50):.2f}s "
            f"p99 {pct(hist.lags, 99):.2f}s "
            f"max {max(hist.lags):.2f}s; > 60 s late: {late}"
        )
        print(
            f"  BMC read started - due: p50 {pct(hist.starts, 50):.2f}s p99 {pct(hist.starts, 99):.2f}s "
            f"max {max(hist.starts):.2f}s"
        )
        per = hist.checks_per_host
        if per:  # per-host mode (batched: every watched host is read in each round)
            print(
                f"  checks per host in the window: min {min(per)} max {max(per)} "
                f"(hosts with a check: {len(per)})"
            )
    if hist.lengths:
        print(
            f"  history events per open run: p50 {pct([float(x) for x in hist.lengths], 50):.0f} "
            f"max {max(hist.lengths)}; runs by status {dict(hist.runs)} "
            f"(continue-as-new at {a.history_limit} events)"
        )
    if hist.bytes_per_check:
        per_check = pct(hist.bytes_per_check, 50)
        per_day = DAY / a.interval
        print(
            f"  history per check: {per_check:.0f} bytes (p50); "
            f"{per_check * per_day / 1024:.0f} KiB per host per day of history at this interval"
        )
    growth = last.db - first.db
    print(
        f"  Temporal storage: SQLite+WAL {first.db / 2**20:.1f} -> {last.db / 2**20:.1f} MiB "
        f"({growth / 2**20:+.1f} MiB in {window / 60:.1f} min) -> "
        f"{growth / a.hosts / window * DAY / 1024:.0f} KiB per host per day at rest; "
        f"after adoption {first.db / a.hosts / 1024:.1f} KiB per host"
    )
    print(f"after: {load()}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--hosts", type=int, default=10000)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--interval", type=int, default=300, help="seconds between power reads at rest")
    p.add_argument("--start-rate", type=float, default=100, help="workflow starts per second, at most")
    p.add_argument(
        "--per-emulator",
        type=int,
        default=2000,
        help="systems per sushy-emulator process (5000 outlasts its 30 s start)",
    )
    p.add_argument("--history-limit", type=int, default=2000, help="continue-as-new past this many events")
    p.add_argument("--cache", type=int, default=0, help="the worker's sticky cache (default: hosts + 1000)")
    p.add_argument("--adopt-timeout", type=float, default=3600)
    p.add_argument("--sample", type=float, default=30, help="seconds between CPU/RSS samples")
    p.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    p.add_argument(
        "--power-sync",
        choices=("per-host", "batched"),
        default="batched",
        help="who reads power at rest: each host on a timer, or PowerSyncWorkflow shards (batched)",
    )
    a = p.parse_args()
    # a SIGTERM unwinds like ^C: the dev server, worker and emulators are stopped, not orphaned
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.getLogger("sushy").setLevel(logging.CRITICAL)
    print(preamble("bench.at_rest"), flush=True)
    asyncio.run(run(a))


if __name__ == "__main__":
    main()
