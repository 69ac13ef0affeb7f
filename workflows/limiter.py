"""ProvisioningLimiter: one per namespace (`limiter/<ns>`); metal3's PROVISIONING_LIMIT as a workflow.

A host asks for a slot (signal `request`) before a limited working state (inspecting,
preparing, provisioning, deprovisioning) and is answered with `slot_granted` or
`slot_queued`; queued hosts get `slot_granted` first come first served when a holder
signals `release`. Signals rather than Updates: with 500 hosts asking at once the server
aborted Updates ("workflow update was aborted").
All bookkeeping is this workflow's durable state, so a worker restart loses no slot and no
place in line; `peak` records the most slots ever held at once. While hosts wait, holders
are checked now and then: a host workflow that was terminated holding a slot gives it back.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from metalflow.api.fleet import (
    LIMITER_GONE,
    LIMITER_WORKFLOW,
    SLOT_GRANTED_SIGNAL,
    SLOT_QUEUED_SIGNAL,
    SLOT_RELEASE_SIGNAL,
    SLOT_REQUEST_SIGNAL,
    LimiterState,
)
from workflows.options import LOCAL_RETRY, LOCAL_TIMEOUT


@workflow.defn(name=LIMITER_WORKFLOW)
class ProvisioningLimiter:
    @workflow.init
    def __init__(self, state: LimiterState) -> None:
        self._s = state
        self._dirty = bool(state.waiting)
        self._answers: list[tuple[str, str]] = []  # (holder, signal) not sent yet

    @workflow.signal(name=SLOT_REQUEST_SIGNAL)
    def request(self, holder: str) -> None:
        s = self._s
        if holder in s.holders:
            answer = SLOT_GRANTED_SIGNAL  # idempotent: a retried request
        elif holder in s.waiting:
            answer = SLOT_QUEUED_SIGNAL
        elif not s.waiting and len(s.holders) < s.limit:
            self._hold(holder)
            answer = SLOT_GRANTED_SIGNAL
        else:
            s.waiting.append(holder)
            s.delayed += 1
            answer = SLOT_QUEUED_SIGNAL
        self._answers.append((holder, answer))
        self._dirty = True

    @workflow.signal(name=SLOT_RELEASE_SIGNAL)
    def release(self, holder: str) -> None:
        s = self._s
        s.holders = [h for h in s.holders if h != holder]
        s.waiting = [h for h in s.waiting if h != holder]
        self._dirty = True

    @workflow.update
    def set_limit(self, limit: int) -> LimiterState:
        if limit <= 0:
            raise ApplicationError(f"the provisioning limit must be positive, got {limit}")
        self._s.limit = limit
        self._dirty = True
        return self._s

    @workflow.query
    def state(self) -> LimiterState:
        return self._s

    def _hold(self, holder: str) -> None:
        s = self._s
        s.holders.append(holder)
        s.grants += 1
        s.peak = max(s.peak, len(s.holders))

    @workflow.run
    async def run(self, state: LimiterState) -> None:
        while True:
            try:
                await workflow.wait_condition(
                    lambda: self._dirty, timeout=timedelta(seconds=self._s.check_holders_seconds)
                )
            except TimeoutError:
                if self._s.waiting and self._s.holders:
                    await self._drop_ended_holders()
            self._dirty = False
            while self._s.waiting and len(self._s.holders) < self._s.limit:
                holder = self._s.waiting.pop(0)
                self._hold(holder)
                self._answers.append((holder, SLOT_GRANTED_SIGNAL))
            await self._send_answers()
            if workflow.info().is_continue_as_new_suggested() and not self._answers:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._answers:  # every answer sent; the state carries the queue
                    workflow.continue_as_new(self._s)

    async def _send_answers(self) -> None:
        answers, self._answers = self._answers, []
        results = await asyncio.gather(
            *(workflow.get_external_workflow_handle(h).signal(sig) for h, sig in answers),
            return_exceptions=True,
        )
        for (holder, _), result in zip(answers, results, strict=True):
            if isinstance(result, BaseException):  # the host is gone: its slot is free again
                workflow.logger.warning("no answer reaches %s: %s", holder, result)
                self.release(holder)

    async def _drop_ended_holders(self) -> None:
        ended = await workflow.execute_activity(
            LIMITER_GONE,
            list(self._s.holders),
            result_type=list[str],
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
            summary="look for holders that ended",
        )
        for holder in ended:
            workflow.logger.warning("%s ended holding a provisioning slot; the slot is free again", holder)
            self.release(holder)
