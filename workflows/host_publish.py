"""Publishing a host's status: search attributes and memo for the UI, BareMetalHost.status
through the status activity (a control call, workflows/control_calls.py). Called after every
change the operator should see.

The search attributes and memo are commands of the workflow task that made the change. The
status activity runs in the background (`StatusPublisher`), one write at a time and in order:
the host goes on (starts its next step, which is what the operator waits for) in the same
workflow task instead of waiting a task per write. A status waiting to be written is replaced
by a newer one only when both show the same state and error: every state the host went
through is written, so the BareMetalHost's Events (metalflow.api.events, from the state each
write moves away from) miss none.
A host took 10 writes and 22 workflow tasks from registering to provisioned with each write
awaited (bench.fleet prints the counts). A write that fails its retries is logged and tried
again later; the status is never lost (the `status` query has it) and no longer fails the host.
Histories from before the patch `status-publish-in-background` replay the awaited way.

Since the patch `status-lean`: only a host started for a BareMetalHost (the bridge tags its uid
in the memo) writes its status; a host from a script or a fleet has its query, memo and search
attributes, and its writes were activities that only logged (a third of the activity tasks of
its lifecycle): the transition is logged here and the metrics come from the workflow
(host_metrics.py). And the search attributes and memo are upserted once per workflow task, with
only what changed (a task that went through three states made three pairs of events, each a
visibility write on the server, and every upsert repeated all seven attributes).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError

from metalflow.api import search_attributes as sa
from metalflow.api.host import STATUS_PUBLISH, StatusUpdate
from metalflow.api.models import HostRef, HostSpec, HostStatus
from workflows import patches
from workflows.control_calls import control_call
from workflows.host_metrics import HostMetrics

BACKGROUND_PATCH = "status-publish-in-background"
LEAN_PATCH = "status-lean"  # written only to a BareMetalHost; mirrored once a task, what changed
RETRY_AFTER = timedelta(seconds=30)  # a write that failed its retries (Kubernetes unreachable)


class StatusPublisher:
    """One host's status writes, in order and in the background; see the module's note."""

    def __init__(self, ref: HostRef, retry_after: timedelta = RETRY_AFTER) -> None:
        self._ref = ref
        self._retry_after = retry_after
        self._background: bool | None = None  # decided by the patch at the run's first publish
        self._writes = True  # whether there is a BareMetalHost to write to (idem)
        self._lean = False  # idem: status-lean
        self._mirror: tuple[list[SearchAttributeUpdate[Any]], str] = ([], "")
        self._mirroring: asyncio.Task[None] | None = None
        self._metrics = HostMetrics()
        self._waiting: list[StatusUpdate] = []
        self._writing: asyncio.Task[None] | None = None

    async def publish(self, spec: HostSpec, status: HostStatus, paused: bool, detached: bool) -> None:
        if self._background is None:
            self._background = patches.patched(BACKGROUND_PATCH)
            self._lean = patches.patched(LEAN_PATCH)
            self._writes = not self._lean or bool(workflow.memo_value("uid", "", type_hint=str))
        update, attributes, line = stamp(self._ref, spec, status, paused, detached)
        if self._lean:
            self._mirror = (attributes, line)
            if self._mirroring is None:  # at the end of this workflow task, with the latest
                self._mirroring = asyncio.create_task(self._upsert_changes())
        else:
            workflow.upsert_search_attributes(attributes)
            workflow.upsert_memo({"summary": line})
        self._metrics.published(update.status)
        if not self._writes:
            workflow.logger.info("host status: %s", line)
            return
        if not self._background:
            return await _write(update)
        update = update.model_copy(deep=True)  # the host goes on changing its own status
        if self._waiting and _same_story(self._waiting[-1].status, update.status):
            self._waiting[-1] = update
        else:
            self._waiting.append(update)
        if self._writing is None:
            self._writing = asyncio.create_task(self._drain())

    async def flush(self) -> None:
        """Wait until every status published so far is written and mirrored (before the run ends)."""
        await workflow.wait_condition(lambda: self._writing is None and self._mirroring is None)

    async def _upsert_changes(self) -> None:
        """Runs once the publishing code yields, still in the same workflow task (no await here)."""
        attributes, line = self._mirror
        self._mirroring = None
        now = workflow.info().typed_search_attributes
        changed = [a for a in attributes if now.get(a.key) != a.value]
        if changed:
            workflow.upsert_search_attributes(changed)
        if workflow.memo_value("summary", "", type_hint=str) != line:
            workflow.upsert_memo({"summary": line})

    async def _drain(self) -> None:
        while self._waiting:
            update = self._waiting.pop(0)  # a publish meanwhile queues behind it, never replaces it
            try:
                await _write(update)
            except ActivityError as err:
                workflow.logger.warning(
                    "host %s: status not written (%s); trying again in %ss",
                    self._ref.host_id,
                    err.cause or err,
                    int(self._retry_after.total_seconds()),
                )
                if not (self._waiting and _same_story(update.status, self._waiting[0].status)):
                    self._waiting.insert(0, update)  # unless a newer one tells the same
                await workflow.sleep(self._retry_after)
        self._writing = None


def _same_story(a: HostStatus, b: HostStatus) -> bool:
    """Whether writing B instead of A loses nothing the BareMetalHost's Events are made from."""
    return (a.provisioning.state, a.error_type, a.error_message, a.error_count) == (
        b.provisioning.state,
        b.error_type,
        b.error_message,
        b.error_count,
    )


def stamp(
    ref: HostRef, spec: HostSpec, status: HostStatus, paused: bool, detached: bool
) -> tuple[StatusUpdate, list[SearchAttributeUpdate[Any]], str]:
    """Stamp the status and show it as the UI's current details (a query: not in history);
    return the write for BareMetalHost.status, and the search attributes and memo line that
    mirror it."""
    status.last_updated = workflow.now()
    status.paused = paused
    state = status.provisioning.state
    attributes: list[SearchAttributeUpdate[Any]] = [
        sa.HOST_NAME.value_set(ref.name),
        sa.HOST_NAMESPACE.value_set(ref.namespace),
        sa.HOST_STATE.value_set(state.value or "none"),
        sa.BMC_ADDRESS.value_set(spec.bmc.address),
        sa.IMAGE_URL.value_set(spec.image.url if spec.image else ""),
        sa.ERROR_TYPE.value_set(status.error_type.value if status.error_type else ""),
        sa.OPERATIONAL_STATUS.value_set(status.operational_status.value),
    ]
    line = summary(ref, status, paused, detached)
    workflow.set_current_details(line)
    update = StatusUpdate(
        host=ref, status=status, workflow_id=workflow.info().workflow_id, run_id=workflow.info().run_id
    )
    return update, attributes, line


async def _write(update: StatusUpdate) -> None:
    state = update.status.provisioning.state
    await control_call(STATUS_PUBLISH, update, summary=f"publish status: {state.value or 'none'}")


def summary(ref: HostRef, st: HostStatus, paused: bool, detached: bool) -> str:
    """One line for the UI's memo column: where the host is and what it is doing."""
    parts = [
        f"{ref.namespace}/{ref.name}",
        st.provisioning.state.value or "none",
        "on" if st.powered_on else "off",
    ]
    if st.current_step:
        parts.append(f"running {st.current_step}")
    if st.error_type:
        parts.append(f"{st.error_type.value}: {st.error_message}")
    if paused:
        parts.append("paused")
    if detached:
        parts.append("detached")
    return " | ".join(parts)
