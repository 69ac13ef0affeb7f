"""What a host is doing right now, read from Temporal itself: no progress bookkeeping of our own.

The host workflow's pending child is the running step; that child's pending activities carry
the agent's last heartbeat (the image writer reports bytes written). Finished steps keep their
results in history, so the last image write's byte count outlives the step.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.common.v1 import Payloads
from temporalio.client import Client
from temporalio.service import RPCError

from metalflow.api.host import DEPLOY_HOST, StepResult
from metalflow.api.models import HostRef, HostSpec, HostStatus
from metalflow.client import operations


@dataclass
class ActivityProgress:
    activity_type: str
    attempt: int
    heartbeat: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes_done(self) -> int | None:
        for key in ("bytes_written", "bytes_erased"):
            if isinstance(self.heartbeat.get(key), int):
                return int(self.heartbeat[key])
        return None


@dataclass
class StepProgress:
    workflow_id: str
    workflow_type: str
    activities: list[ActivityProgress] = field(default_factory=list)


async def _decode(client: Client, payloads: Payloads) -> dict[str, Any]:
    if not payloads.payloads:
        return {}
    values = await client.data_converter.decode(list(payloads.payloads))
    last = values[-1] if values else None
    return last if isinstance(last, dict) else {}


async def running_steps(client: Client, ref: HostRef) -> list[StepProgress]:
    """The host's pending child workflows and, for each, its pending activities' heartbeats."""
    try:
        desc = await operations.handle_for(client, ref).describe()
    except RPCError:
        return []
    steps = []
    for child in desc.raw_description.pending_children:
        step = StepProgress(child.workflow_id, child.workflow_type_name)
        try:
            child_desc = await client.get_workflow_handle(child.workflow_id).describe()
        except RPCError:  # finished between the two calls
            continue
        for pa in child_desc.raw_description.pending_activities:
            step.activities.append(
                ActivityProgress(
                    pa.activity_type.name, pa.attempt, await _decode(client, pa.heartbeat_details)
                )
            )
        steps.append(step)
    return steps


async def last_image_write(client: Client, ref: HostRef) -> StepResult | None:
    """The result of the host's most recent finished DeployHost step."""
    query = (
        f'WorkflowType="{DEPLOY_HOST}" AND ExecutionStatus="Completed" '
        f'AND WorkflowId STARTS_WITH "{ref.workflow_id}/"'
    )
    newest = None
    async for wf in client.list_workflows(query):
        if newest is None or (wf.close_time and newest.close_time and wf.close_time > newest.close_time):
            newest = wf
    if newest is None:
        return None
    handle = client.get_workflow_handle(newest.id, run_id=newest.run_id, result_type=StepResult)
    return await handle.result()


@dataclass
class HostDetails:
    """One `metalflow hosts` row: visibility fields plus the spec and status a query returns."""

    row: operations.HostRow
    spec: HostSpec | None
    status: HostStatus | None

    def age_seconds(self, now: datetime | None = None) -> float | None:
        now = now or datetime.now(UTC)
        started = self.status.operation_history.register_.start if self.status else None
        if started is not None:
            return (now - started).total_seconds()
        if self.row.start_time is not None:
            return now.timestamp() - self.row.start_time
        return None


async def details(
    client: Client,
    rows: list[operations.HostRow],
    parallel: int = 16,
    query_timeout: timedelta = timedelta(seconds=5),
) -> list[HostDetails]:
    """Query running hosts for spec and status, a few at a time; ended ones keep visibility only."""
    gate = asyncio.Semaphore(parallel)

    async def one(row: operations.HostRow) -> HostDetails:
        if not row.running:
            return HostDetails(row, None, None)
        handle = operations.handle_for(client, row.ref)
        async with gate:
            try:  # a host whose worker is down answers no query: show its visibility fields only
                spec, status = await asyncio.gather(
                    handle.query("spec", result_type=HostSpec, rpc_timeout=query_timeout),
                    handle.query("status", result_type=HostStatus, rpc_timeout=query_timeout),
                )
            except RPCError:
                return HostDetails(row, None, None)
        return HostDetails(row, spec, status)

    return list(await asyncio.gather(*(one(r) for r in rows)))


def human_age(seconds: float | None) -> str:
    """kubectl's AGE column: 42s, 7m, 3h, 5d."""
    if seconds is None:
        return "<unknown>"
    s = max(int(seconds), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
