"""AllocatorWorkflow: one per namespace (`allocator/<namespace>`); hands out hosts to claims.

Race-free without an external lock: every grant happens inside this one workflow, under an
asyncio.Lock held across "look at the hosts, pick, record" (the samples-python pattern for
safe message handlers), and the record of who holds what is durable workflow state. Pending
claims are retried whenever the pool may have changed (a release, a poke, or a timer).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from metalflow.api.claims import Candidate, Claim, ClaimPhase, ClaimStatus, choose
from metalflow.api.pools import (
    ALLOCATOR_WORKFLOW,
    POOL_ASSIGN,
    POOL_CANDIDATES,
    POOL_RELEASE,
    AllocatorState,
    Assignment,
)
from workflows.options import LOCAL_RETRY

RETRY_PENDING_EVERY = timedelta(seconds=15)


@workflow.defn(name=ALLOCATOR_WORKFLOW)
class AllocatorWorkflow:
    @workflow.init
    def __init__(self, state: AllocatorState) -> None:
        self._state = state
        self._lock = asyncio.Lock()
        self._poked = False

    @workflow.update
    async def claim(self, claim: Claim) -> ClaimStatus:
        """Grant a host now if one fits; otherwise the claim waits, with the reason in its status."""
        current = self._state.statuses.get(claim.id)
        if current is not None and current.phase != ClaimPhase.RELEASED:
            return current  # idempotent: the same claim asked twice
        self._state.claims[claim.id] = claim
        self._state.statuses[claim.id] = ClaimStatus(id=claim.id, phase=ClaimPhase.PENDING)
        await self._allocate()
        return self._state.statuses[claim.id]

    @claim.validator
    def _validate_claim(self, claim: Claim) -> None:
        if claim.namespace != self._state.namespace:
            raise ValueError(
                f"claim {claim.id} is for namespace {claim.namespace!r}; "
                f"send it to allocator/{claim.namespace}"
            )

    @workflow.update
    async def release(self, claim_id: str) -> ClaimStatus:
        status = self._state.statuses.get(claim_id)
        if status is None:
            raise ValueError(f"no claim {claim_id!r}")
        async with self._lock:
            if status.phase == ClaimPhase.GRANTED and status.host is not None:
                await workflow.execute_activity(
                    POOL_RELEASE,
                    Assignment(claim_id=claim_id, host=status.host),
                    start_to_close_timeout=timedelta(minutes=1),
                    retry_policy=LOCAL_RETRY,
                    summary=f"release {status.host.name} from {claim_id}",
                )
            status.phase, status.reason = ClaimPhase.RELEASED, "released"
        self._poked = True
        return status

    @workflow.signal
    def poke(self) -> None:
        """The pool changed (a host became available): try pending claims now."""
        self._poked = True

    @workflow.query
    def claims(self) -> list[ClaimStatus]:
        return list(self._state.statuses.values())

    @workflow.run
    async def run(self, state: AllocatorState) -> None:
        while True:
            try:
                await workflow.wait_condition(lambda: self._poked, timeout=RETRY_PENDING_EVERY)
            except TimeoutError:
                pass
            self._poked = False
            if any(s.phase == ClaimPhase.PENDING for s in self._state.statuses.values()):
                await self._allocate()
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._state)

    async def _allocate(self) -> None:
        """One round: fetch the pool once, grant every pending claim that fits, in arrival order."""
        async with self._lock:
            pending = [
                self._state.claims[i]
                for i, s in self._state.statuses.items()
                if s.phase == ClaimPhase.PENDING
            ]
            if not pending:
                return
            pool = await workflow.execute_activity(
                POOL_CANDIDATES,
                self._state.namespace,
                result_type=list[Candidate],
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=LOCAL_RETRY,
                summary="list available hosts",
            )
            taken = {
                s.host.host_id
                for s in self._state.statuses.values()
                if s.phase == ClaimPhase.GRANTED and s.host
            }
            for claim in pending:
                status = self._state.statuses[claim.id]
                chosen, why = choose(claim, pool, taken)
                if chosen is None:
                    status.reason = why
                    continue
                try:
                    await workflow.execute_activity(
                        POOL_ASSIGN,
                        Assignment(
                            claim_id=claim.id, host=chosen.ref, spec=claim.spec, consumer=claim.consumer_ref()
                        ),
                        start_to_close_timeout=timedelta(minutes=1),
                        retry_policy=LOCAL_RETRY,
                        summary=f"assign {chosen.ref.name} to {claim.id}",
                    )
                except ActivityError as err:
                    status.reason = f"{chosen.ref.name} could not be assigned: {err.cause or err}"
                    taken.add(chosen.ref.host_id)  # skip it this round
                    continue
                taken.add(chosen.ref.host_id)
                status.phase, status.host, status.reason = ClaimPhase.GRANTED, chosen.ref, ""
