"""Fleet and limiter activities: they talk to Temporal itself (start, update, visibility).

Workflows cannot send Updates or read visibility, so these small activities do it with the
worker's client; the workflows stay deterministic.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from activities import visibility_rows
from metalflow.api import search_attributes as sa
from metalflow.api import states
from metalflow.api.fleet import (
    FLEET_APPLY,
    FLEET_MEMBERS_QUERY,
    FLEET_OBSERVE,
    LIMITER_CONFIGURE,
    LIMITER_GONE,
    LIMITER_REQUEST,
    LIMITER_WORKFLOW,
    SLOT_REQUEST_SIGNAL,
    ApplyOutcome,
    FleetApply,
    FleetObserve,
    FleetProgress,
    HostOutcome,
    LimiterState,
    LimitRequest,
    SlotRequest,
    limiter_id,
)
from metalflow.api.host import HOST_WORKFLOW
from metalflow.api.models import HostRef, OperationalStatus
from metalflow.client import operations
from metalflow.runtime.settings import get_settings

APPLY_CONCURRENCY = 16
MEMBERS_KEPT = 64  # fleet runs whose members this worker remembers
_members: OrderedDict[tuple[str, str], list[FleetObserve]] = OrderedDict()
SUPERSEDED = {WorkflowExecutionStatus.CONTINUED_AS_NEW}
ENDED_BADLY = {
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT,
    WorkflowExecutionStatus.CANCELED,
}


async def _limiter(
    client: Client, namespace: str, task_queue: str, request: str | None = None
) -> WorkflowHandle[object, None]:
    """The namespace's limiter, started with the worker's configured limit if not running;
    with `request`, that slot request is signalled in the same call (signal-with-start)."""
    limit = get_settings().max_concurrent_provisioning
    return await client.start_workflow(
        LIMITER_WORKFLOW,
        LimiterState(namespace=namespace, limit=limit),
        id=limiter_id(namespace),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"provisioning limit for namespace {namespace}",
        start_signal=SLOT_REQUEST_SIGNAL if request else None,
        start_signal_args=[request] if request else [],
    )


@activity.defn(name=LIMITER_REQUEST)
async def request(req: SlotRequest) -> None:
    """Ask for a slot. A signal, not an Update: hundreds of hosts ask at once, and with 500
    the server aborted Updates ("workflow update was aborted"); signals are simply queued."""
    await _limiter(activity.client(), req.namespace, req.task_queue, request=req.holder)


@activity.defn(name=LIMITER_CONFIGURE)
async def configure(req: LimitRequest) -> LimiterState:
    handle = await _limiter(activity.client(), req.namespace, req.task_queue)
    return await handle.execute_update("set_limit", req.limit, result_type=LimiterState)


@activity.defn(name=LIMITER_GONE)
async def gone(holders: list[str]) -> list[str]:
    """Holders whose workflow is no longer running (terminated, say): their slots are free."""
    client = activity.client()

    async def ended(wid: str) -> bool:
        try:
            desc = await client.get_workflow_handle(wid).describe()
        except RPCError as err:
            return err.status == RPCStatusCode.NOT_FOUND
        return desc.status != WorkflowExecutionStatus.RUNNING

    flags = await asyncio.gather(*(ended(h) for h in holders))
    return [h for h, flag in zip(holders, flags, strict=True) if flag]


@activity.defn(name=FLEET_APPLY)
async def apply(req: FleetApply) -> list[ApplyOutcome]:
    """Start (or update) each host's workflow; a host that cannot be applied is reported, not raised."""
    client = activity.client()
    settings = get_settings().model_copy(update={"task_queue": req.task_queue})
    gate = asyncio.Semaphore(APPLY_CONCURRENCY)

    async def one(i: int) -> ApplyOutcome:
        host = req.hosts[i]
        out = ApplyOutcome(name=host.ref.name, namespace=host.ref.namespace)
        async with gate:
            try:
                out.started = (await operations.apply(client, host, settings)).started
            except Exception as err:  # reported per host in the fleet summary
                out.error = f"{type(err).__name__}: {err}"
        activity.heartbeat(i)
        return out

    return list(await asyncio.gather(*(one(i) for i in range(len(req.hosts)))))


async def _names(client: Client, req: FleetObserve) -> tuple[list[str], list[str]]:
    """The hosts to watch and those without an image: from the input, or asked of the fleet
    once per run (a fleet's members do not change after it has applied them)."""
    if not req.members_of:
        return req.names, req.without_image
    key = (req.members_of, activity.info().workflow_run_id or "")
    members = _members.get(key)
    if members is None:
        handle = client.get_workflow_handle(req.members_of)
        members = await handle.query(FLEET_MEMBERS_QUERY, result_type=list[FleetObserve])
        _members[key] = members
        while len(_members) > MEMBERS_KEPT:
            _members.popitem(last=False)
    mine = next((m for m in members if m.namespace == req.namespace), None)
    return (mine.names, mine.without_image) if mine else ([], [])


@activity.defn(name=FLEET_OBSERVE)
async def observe(req: FleetObserve) -> FleetProgress:
    """One visibility listing for the namespace's hosts; status queries only for the failed ones."""
    client = activity.client()
    names, without = await _names(client, req)
    wanted, without_image = set(names), set(without)
    rows: dict[str, HostOutcome] = {}
    query = f'WorkflowType="{HOST_WORKFLOW}" AND HostNamespace="{req.namespace}"'
    running: set[str] = set()
    keys = (sa.HOST_STATE.name, sa.ERROR_TYPE.name, sa.OPERATIONAL_STATUS.name)
    async for wf in visibility_rows.rows(client, query, keys):
        ref = HostRef.from_workflow_id(wf.workflow_id)
        live = wf.status == WorkflowExecutionStatus.RUNNING
        # one row per host: its running run wins over older runs (continued-as-new, ended)
        if ref.name not in wanted or ref.name in running or wf.status in SUPERSEDED:
            continue
        if ref.name in rows and not live:
            continue
        state, error_type, operational = (wf.attrs[k] for k in keys)
        if wf.status in ENDED_BADLY:  # terminated, say: the host needs the operator
            error_type = f"workflow {wf.status.name.lower().replace('_', ' ')}"
        rows[ref.name] = HostOutcome(
            name=ref.name,
            namespace=ref.namespace,
            state=state,
            operational_status=operational,
            error_type=error_type,
            settled=not live
            or states.settled(state, ref.name not in without_image, in_error=bool(error_type)),
        )
        if live:
            running.add(ref.name)
    failed = [r for r in rows.values() if r.error_type]

    async def explain(row: HostOutcome) -> None:
        if row.error_type.startswith("workflow "):
            row.error_message = "the host's workflow ended; apply the host again to restart it"
            return
        try:
            st = await operations.status(client, HostRef(namespace=row.namespace, name=row.name))
        except Exception as err:  # the row still names the errorType
            row.error_message = f"(status unavailable: {err})"
            return
        row.error_message = st.error_message

    await asyncio.gather(*(explain(r) for r in failed))
    progress = FleetProgress(total=len(wanted), settled=sum(r.settled for r in rows.values()), failed=failed)
    for row in rows.values():
        key = row.state or "none"
        progress.by_state[key] = progress.by_state.get(key, 0) + 1
        progress.delayed += row.operational_status == OperationalStatus.DELAYED.value
    missing = len(wanted) - len(rows)
    if missing:
        progress.by_state["not started"] = missing
    if req.detail:
        progress.hosts = sorted(rows.values(), key=lambda r: r.name)
    return progress


ACTIVITIES = [request, configure, gone, apply, observe]
