"""What a host's lifecycle costs Temporal: events, workflow tasks, activities, signals per host.

Control-plane CPU follows these counts (every workflow task is a poll, a replay or a cache hit,
and a persisted batch of events), so the fleet benchmark prints them beside its CPU figure:
a cut in CPU without a cut here is noise, and a cut here shows where the CPU went.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

E = EventType
PATCH_MARKER = "core_patch"  # the marker name the SDK core gives workflow.patched()
CLOSED = (
    "activity_task_completed_event_attributes",
    "activity_task_failed_event_attributes",
    "activity_task_timed_out_event_attributes",
)


@dataclass
class Counts:
    """Totals over every workflow run the namespace holds (continued-as-new runs included)."""

    runs: int = 0
    events: int = 0
    workflow_tasks: int = 0
    activities: Counter[str] = field(default_factory=Counter)
    local_activities: int = 0
    patch_markers: int = 0  # workflow.patched() records a marker too: not a local activity
    signals: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)  # workflow type -> events
    tasks_by_type: Counter[str] = field(default_factory=Counter)  # workflow type -> workflow tasks
    call_seconds: float = 0.0  # inside BMC and agent activity tasks, started -> closed, all attempts

    def _calls(self, events: list) -> None:  # type: ignore[type-arg]
        """Seconds spent inside bmc.* and agent.* activity tasks (the last attempt of each)."""
        names: dict[int, str] = {}
        started: dict[int, float] = {}
        for ev in events:
            t = ev.event_time.ToMicroseconds() / 1e6
            if ev.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                names[ev.event_id] = ev.activity_task_scheduled_event_attributes.activity_type.name
            elif ev.event_type == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started[ev.activity_task_started_event_attributes.scheduled_event_id] = t
            for attr in CLOSED:
                if ev.HasField(attr):
                    sched = getattr(ev, attr).scheduled_event_id
                    if names.get(sched, "").startswith(("bmc.", "agent.")) and sched in started:
                        self.call_seconds += t - started[sched]

    def add(self, wf_type: str, events: list) -> None:  # type: ignore[type-arg]
        self.runs += 1
        self.events += len(events)
        self.by_type[wf_type] += len(events)
        self._calls(events)
        for ev in events:
            t = ev.event_type
            if t == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                self.workflow_tasks += 1
                self.tasks_by_type[wf_type] += 1
            elif t == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                self.activities[ev.activity_task_scheduled_event_attributes.activity_type.name] += 1
            elif t == E.EVENT_TYPE_MARKER_RECORDED:
                if ev.marker_recorded_event_attributes.marker_name == PATCH_MARKER:
                    self.patch_markers += 1
                else:
                    self.local_activities += 1
            elif t == E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                self.signals[ev.workflow_execution_signaled_event_attributes.signal_name] += 1

    def report(self, hosts: int, top: int = 12, host_seconds: float = 0.0) -> list[str]:
        """Per-host averages, the largest first; with the hosts' mean lifecycle time, the
        orchestration overhead: that time minus the time inside BMC and agent calls."""
        h = max(hosts, 1)
        lines = []
        if host_seconds:
            inside = self.call_seconds / h
            lines.append(
                f"  per host: {host_seconds:.1f} s register -> provisioned, {inside:.1f} s of it inside "
                f"BMC and agent calls: orchestration overhead {host_seconds - inside:.1f} s "
                "(waits for a slot included)"
            )
        lines += [
            f"  per host: {self.events / h:.0f} history events, "
            f"{self.workflow_tasks / h:.1f} workflow tasks, "
            f"{sum(self.activities.values()) / h:.1f} activities, {self.local_activities / h:.1f} local "
            f"activities, {self.patch_markers / h:.1f} patch markers, "
            f"{sum(self.signals.values()) / h:.1f} signals, {self.runs / h:.1f} workflow runs"
        ]
        lines.append(
            "    events/tasks by workflow type: "
            + ", ".join(
                f"{k} {v / h:.0f}/{self.tasks_by_type[k] / h:.1f}" for k, v in self.by_type.most_common()
            )
        )
        lines.append(
            "    activities: " + ", ".join(f"{k} {v / h:.1f}" for k, v in self.activities.most_common(top))
        )
        if self.signals:
            lines.append(
                "    signals: " + ", ".join(f"{k} {v / h:.1f}" for k, v in self.signals.most_common(top))
            )
        return lines


async def count(client: Client, query: str = "") -> Counts:
    """Fetch every history the query lists (16 at a time) and count."""
    out = Counts()
    gate = asyncio.Semaphore(16)

    async def one(wid: str, run_id: str, wf_type: str) -> None:
        async with gate:
            history = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
        out.add(wf_type, list(history.events))

    jobs = [one(wf.id, wf.run_id, wf.workflow_type) async for wf in client.list_workflows(query or None)]
    await asyncio.gather(*jobs)
    return out
