"""A resting host's part in the batched power sync (metalflow.api.power_sync): ask its shard
to watch it with what it knows (BMC target, power, failing), stop when it leaves rest, and hold
the reading the shard signals. Only hosts started with `power_sync: batched` use it; the others
read their own power on a timer (HostWorkflow._check_power)."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from metalflow.api.bmc import BMCTarget
from metalflow.api.models import HostRef, HostSpec, HostStatus
from metalflow.api.power_sync import POWER_WATCH_REQUEST, PowerReading, PowerWatch, PowerWatchRequest
from metalflow.api.states import POWER_SYNC
from workflows.bmc_calls import target_of
from workflows.control_calls import control_call


class PowerWatcher:
    def __init__(self, ref: HostRef, batched: bool) -> None:
        self._ref = ref
        self.batched = batched
        self._told: BMCTarget | None = None  # the BMC the shard reads for this host, if watched
        self._seen: PowerReading | None = None  # the shard's latest signal, not yet acted on

    def seen(self, reading: PowerReading) -> None:
        self._seen = reading

    def take(self) -> PowerReading | None:
        reading, self._seen = self._seen, None
        return reading

    async def rest(
        self, resting: bool, spec: HostSpec, status: HostStatus, interval: int, changed: Callable[[], bool]
    ) -> PowerReading | None:
        """Watched while resting (else not), until something changes: the reading, if that was it."""
        await (self.watch(spec, status, interval) if resting else self.unwatch(interval))
        # a reading signalled during a back-off is still pending: it is the change
        await workflow.wait_condition(lambda: changed() or self._seen is not None)
        return self.take()

    async def watch(self, spec: HostSpec, status: HostStatus, interval: int) -> None:
        """Ask once (and again when the BMC changes); the shard starts from what the host knows,
        then keeps its own record of what it told the host."""
        target = target_of(spec)
        if target == self._told:
            return
        want = PowerWatch(
            host_id=self._ref.workflow_id,
            target=target,
            powered_on=status.powered_on,
            failing=status.error_type == POWER_SYNC.error_type,
        )
        await self._request(interval, want, "watch this host's power")
        self._told = target

    async def unwatch(self, interval: int) -> None:
        if self._told is None:
            return
        await self._request(interval, None, "stop watching this host's power")
        self._told = None

    async def _request(self, interval: int, watch: PowerWatch | None, summary: str) -> None:
        req = PowerWatchRequest(
            namespace=self._ref.namespace,
            host_id=self._ref.workflow_id,
            task_queue=workflow.info().task_queue,
            interval_seconds=max(interval, 1),
            watch=watch,
        )
        await control_call(POWER_WATCH_REQUEST, req, summary=summary)


def reading_error(reading: PowerReading) -> ActivityError:
    """A failed read as the error a host's own read would raise (same status fields after)."""
    err = ActivityError(
        "power sync read failed",
        scheduled_event_id=0,
        started_event_id=0,
        identity="",
        activity_type="bmc.power.read_batch",
        activity_id="",
        retry_state=None,
    )
    err.__cause__ = ApplicationError(reading.error, type=reading.error_type or None)
    return err
