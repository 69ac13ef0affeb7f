"""FleetWorkflow: provision many hosts at once and report how each one ended.

It sets each namespace's provisioning limit, starts (or updates) every host's own
HostWorkflow, then watches them through visibility until all settle (provisioned, available
without an image, or in error) and returns per-host outcomes with metal3's errorType. The
host workflows do the work and take their slots from the namespace's ProvisioningLimiter,
so the limit holds for hosts outside the fleet too. `progress` is a Query for live views.

A fleet too big for one payload (the server refuses one over 2 MB) arrives in parts: the
first in its input, the rest by the `hosts` signal; nothing is applied before every part is
in. Once applied, the specs are done with: continue-as-new carries the names only, and the
observing activity reads them by the `members` query rather than from its input.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from metalflow.api.errors import ErrorName
from metalflow.api.fleet import (
    FLEET_APPLY,
    FLEET_HOSTS_SIGNAL,
    FLEET_MEMBERS_QUERY,
    FLEET_OBSERVE,
    FLEET_WORKFLOW,
    LIMITER_CONFIGURE,
    ApplyOutcome,
    FleetApply,
    FleetHosts,
    FleetInput,
    FleetObserve,
    FleetProgress,
    HostOutcome,
    LimiterState,
    LimitRequest,
)
from metalflow.api.models import Host
from workflows.options import LOCAL_RETRY, LOCAL_TIMEOUT

APPLY_BATCH = 100
APPLY_ERROR = "apply error"  # the host's workflow could not be started or updated
PARTS_WAIT = timedelta(minutes=5)  # a client sends every part within seconds of the start


@workflow.defn(name=FLEET_WORKFLOW)
class FleetWorkflow:
    @workflow.init
    def __init__(self, inp: FleetInput) -> None:
        total = inp.total or len(inp.hosts)
        self._progress = FleetProgress(total=total)
        later: list[Host | None] = [None] * (total - len(inp.hosts))  # the parts still to come
        self._parts: list[Host | None] = [] if inp.applied else [*inp.hosts, *later]
        self._received = len(inp.hosts)
        self._members: list[FleetObserve] = list(inp.members)

    @workflow.query
    def progress(self) -> FleetProgress:
        return self._progress

    @workflow.query(name=FLEET_MEMBERS_QUERY)
    def members(self) -> list[FleetObserve]:
        """The hosts watched, by namespace (names only): what FLEET_OBSERVE reads."""
        return self._members

    @workflow.signal(name=FLEET_HOSTS_SIGNAL)
    def add_hosts(self, part: FleetHosts) -> None:
        for i, host in enumerate(part.hosts, start=part.offset):
            if i >= len(self._parts):
                workflow.logger.warning("fleet hosts part at %d: beyond the fleet's hosts, ignored", i)
                return
            if self._parts[i] is None:
                self._parts[i] = host
                self._received += 1

    @workflow.run
    async def run(self, inp: FleetInput) -> FleetProgress:
        queue = workflow.info().task_queue
        if inp.deadline is None:
            inp.deadline = workflow.now() + timedelta(seconds=inp.timeout_seconds)
        if not inp.applied:
            hosts = await self._every_part(inp)
            if inp.limit is not None:
                for ns in sorted({h.ref.namespace for h in hosts}):
                    await workflow.execute_activity(
                        LIMITER_CONFIGURE,
                        LimitRequest(namespace=ns, limit=inp.limit, task_queue=queue),
                        result_type=LimiterState,
                        start_to_close_timeout=LOCAL_TIMEOUT,
                        retry_policy=LOCAL_RETRY,
                        summary=f"provisioning limit {inp.limit} in {ns}",
                    )
            inp.apply_failed = await self._apply(hosts, queue)
            inp.applied = True
        else:
            hosts = inp.hosts  # carried by a run from before `members`, or [] once they are
        if not inp.members:
            inp.members = _watch_list(hosts, inp.apply_failed)
            inp.total, inp.hosts, self._parts = self._progress.total, [], []
        self._members = inp.members
        me = workflow.info().workflow_id
        observers = [FleetObserve(namespace=m.namespace, members_of=me) for m in inp.members]
        while True:
            self._progress = await self._observe(observers, inp.apply_failed)
            if self._progress.settled >= self._progress.total:
                break
            if workflow.now() >= inp.deadline:
                self._progress.timed_out = True
                break
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(inp)
            await workflow.sleep(timedelta(seconds=inp.poll_seconds))
        timed_out = self._progress.timed_out
        detailed = [o.model_copy(update={"detail": True}) for o in observers]
        self._progress = await self._observe(detailed, inp.apply_failed)
        self._progress.timed_out, self._progress.done = timed_out, True
        return self._progress

    async def _every_part(self, inp: FleetInput) -> list[Host]:
        """All the fleet's hosts, once the parts signalled after the start are in."""
        if self._received < len(self._parts):
            assert inp.deadline is not None
            wait = min(PARTS_WAIT, inp.deadline - workflow.now())
            try:
                await workflow.wait_condition(lambda: self._received >= len(self._parts), timeout=wait)
            except TimeoutError:
                raise ApplicationError(
                    f"the fleet received {self._received} of its {len(self._parts)} hosts within "
                    f"{int(wait.total_seconds())} s of its start, so it applied none: the client "
                    "that started it stopped sending them; start the fleet again",
                    type=ErrorName.FLEET_INCOMPLETE.value,
                    non_retryable=True,
                ) from None
        return [h for h in self._parts if h is not None]

    async def _apply(self, hosts: list[Host], queue: str) -> list[HostOutcome]:
        failed: list[HostOutcome] = []
        for i in range(0, len(hosts), APPLY_BATCH):
            batch = hosts[i : i + APPLY_BATCH]
            outcomes = await workflow.execute_activity(
                FLEET_APPLY,
                FleetApply(hosts=batch, task_queue=queue),
                result_type=list[ApplyOutcome],
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(minutes=1),
                retry_policy=LOCAL_RETRY,
                summary=f"start or update hosts {i + 1}-{i + len(batch)} of {len(hosts)}",
            )
            failed += [
                HostOutcome(
                    name=o.name,
                    namespace=o.namespace,
                    error_type=APPLY_ERROR,
                    error_message=o.error,
                    settled=True,
                )
                for o in outcomes
                if o.error
            ]
        return failed

    async def _observe(self, observers: list[FleetObserve], apply_failed: list[HostOutcome]) -> FleetProgress:
        parts = await asyncio.gather(
            *(
                workflow.execute_activity(
                    FLEET_OBSERVE,
                    o,
                    result_type=FleetProgress,
                    start_to_close_timeout=LOCAL_TIMEOUT,
                    retry_policy=LOCAL_RETRY,
                    summary=f"observe hosts in {o.namespace}",
                )
                for o in observers
            )
        )
        total = FleetProgress(
            total=len(apply_failed),
            settled=len(apply_failed),
            failed=list(apply_failed),
            hosts=list(apply_failed) if any(o.detail for o in observers) else [],
            by_state={APPLY_ERROR: len(apply_failed)} if apply_failed else {},
        )
        for part in parts:
            total = total.merge(part)
        return total


def _watch_list(hosts: list[Host], apply_failed: list[HostOutcome]) -> list[FleetObserve]:
    """Per namespace (every one the fleet names), the hosts to watch: all but those not applied."""
    failed = {(o.namespace, o.name) for o in apply_failed}
    watched = [h for h in hosts if (h.ref.namespace, h.ref.name) not in failed]
    return [
        FleetObserve(
            namespace=ns,
            names=[h.ref.name for h in watched if h.ref.namespace == ns],
            without_image=[h.ref.name for h in watched if h.ref.namespace == ns and h.spec.image is None],
        )
        for ns in sorted({h.ref.namespace for h in hosts})
    ]
