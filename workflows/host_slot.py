"""A host's hold on one of its namespace's provisioning slots (metal3's PROVISIONING_LIMIT).

The ProvisioningLimiter workflow grants slots; the host asks through an activity, hears back
through the slot signals (HostWorkflow forwards them here) and gives its slot back by signal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import FailureError

from metalflow.api.fleet import LIMITER_REQUEST, SLOT_RELEASE_SIGNAL, SlotRequest, limiter_id
from metalflow.api.models import HostRef, HostStatus, OperationalStatus
from metalflow.api.models import ProvisioningState as S
from metalflow.api.states import LIMITED
from workflows import patches
from workflows.control_calls import control_call

# Histories recorded before the provisioning limit took no slots; they replay without them.
LIMIT_PATCH = "provisioning-limit"
ASK_AGAIN = timedelta(minutes=5)  # a host waiting for its slot repeats its request this often


class ProvisioningSlot:
    def __init__(self, ref: HostRef) -> None:
        self._ref = ref
        self.held = False
        self.granted = False  # set by the slot-granted signal
        self.queued = False  # set by the slot-queued signal

    async def take(self, state: S, status: HostStatus, publish: Callable[[], Awaitable[None]]) -> None:
        """Wait for a slot before a limited state; show metal3's "delayed" while waiting."""
        if self.held or state not in LIMITED or not patches.patched(LIMIT_PATCH):
            return
        self.granted = self.queued = False
        await self._request()
        await self._wait_for_answer(lambda: self.granted or self.queued)
        if not self.granted:
            previous = status.operational_status
            status.operational_status = OperationalStatus.DELAYED
            await publish()
            await self._wait_for_answer(lambda: self.granted)
            status.operational_status = previous
        self.held = True

    async def give_back(self) -> None:
        if not self.held:
            return
        self.held = False
        limiter = workflow.get_external_workflow_handle(limiter_id(self._ref.namespace))
        try:
            await limiter.signal(SLOT_RELEASE_SIGNAL, workflow.info().workflow_id)
        except FailureError as err:  # the limiter was terminated: the next request starts a new one
            workflow.logger.warning("host %s: could not give back its slot: %s", self._ref.host_id, err)

    async def _request(self) -> None:
        info = workflow.info()
        await control_call(
            LIMITER_REQUEST,
            SlotRequest(namespace=self._ref.namespace, holder=info.workflow_id, task_queue=info.task_queue),
            summary="ask for a provisioning slot",
        )

    async def _wait_for_answer(self, answered: Callable[[], bool]) -> None:
        """Ask again now and then: requests are idempotent, and a limiter that was terminated
        meanwhile starts afresh, so no host waits forever for an answer that is lost."""
        while True:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(answered, timeout=ASK_AGAIN)
            if answered():
                return
            await self._request()
