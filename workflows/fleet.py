"""FleetWorkflow: provision many hosts at once and report how each one ended.

It sets each namespace's provisioning limit, starts (or updates) every host's own
HostWorkflow, then watches them through visibility until all settle (provisioned, available
without an image, or in error) and returns per-host outcomes with metal3's errorType. The
host workflows do the work and take their slots from the namespace's ProvisioningLimiter,
so the limit holds for hosts outside the fleet too. `progress` is a Query for live views.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

from metalflow.api.fleet import (
    FLEET_APPLY,
    FLEET_OBSERVE,
    FLEET_WORKFLOW,
    LIMITER_CONFIGURE,
    ApplyOutcome,
    FleetApply,
    FleetInput,
    FleetObserve,
    FleetProgress,
    HostOutcome,
    LimiterState,
    LimitRequest,
)
from workflows.options import LOCAL_RETRY, LOCAL_TIMEOUT

APPLY_BATCH = 100
APPLY_ERROR = "apply error"  # the host's workflow could not be started or updated


@workflow.defn(name=FLEET_WORKFLOW)
class FleetWorkflow:
    @workflow.init
    def __init__(self, inp: FleetInput) -> None:
        self._progress = FleetProgress(total=len(inp.hosts))

    @workflow.query
    def progress(self) -> FleetProgress:
        return self._progress

    @workflow.run
    async def run(self, inp: FleetInput) -> FleetProgress:
        queue = workflow.info().task_queue
        namespaces = sorted({h.ref.namespace for h in inp.hosts})
        if inp.deadline is None:
            inp.deadline = workflow.now() + timedelta(seconds=inp.timeout_seconds)
        if not inp.applied:
            if inp.limit is not None:
                for ns in namespaces:
                    await workflow.execute_activity(
                        LIMITER_CONFIGURE,
                        LimitRequest(namespace=ns, limit=inp.limit, task_queue=queue),
                        result_type=LimiterState,
                        start_to_close_timeout=LOCAL_TIMEOUT,
                        retry_policy=LOCAL_RETRY,
                        summary=f"provisioning limit {inp.limit} in {ns}",
                    )
            inp.apply_failed = await self._apply(inp, queue)
            inp.applied = True
        failed_names = {(o.namespace, o.name) for o in inp.apply_failed}
        watched = [h for h in inp.hosts if (h.ref.namespace, h.ref.name) not in failed_names]
        observers = [
            FleetObserve(
                namespace=ns,
                names=[h.ref.name for h in watched if h.ref.namespace == ns],
                without_image=[h.ref.name for h in watched if h.ref.namespace == ns and h.spec.image is None],
            )
            for ns in namespaces
        ]
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

    async def _apply(self, inp: FleetInput, queue: str) -> list[HostOutcome]:
        failed: list[HostOutcome] = []
        for i in range(0, len(inp.hosts), APPLY_BATCH):
            batch = inp.hosts[i : i + APPLY_BATCH]
            outcomes = await workflow.execute_activity(
                FLEET_APPLY,
                FleetApply(hosts=batch, task_queue=queue),
                result_type=list[ApplyOutcome],
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(minutes=1),
                retry_policy=LOCAL_RETRY,
                summary=f"start or update hosts {i + 1}-{i + len(batch)} of {len(inp.hosts)}",
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
