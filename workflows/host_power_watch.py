"""A resting host's part in the batched power sync (metalflow.api.power_sync): ask its shard
to watch it with what it knows (BMC target, power, failing), stop when it leaves rest, and hold
the reading the shard signals. Only hosts started with `power_sync: batched` use it; the others
read their own power on a timer (HostWorkflow._check_power)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from metalflow.api.bmc import BMCTarget
from metalflow.api.models import HostRef, HostSpec, HostStatus
from metalflow.api.power_sync import POWER_WATCH_REQUEST, PowerReading, PowerWatch, PowerWatchRequest
from metalflow.api.states import POWER_SYNC
from workflows import patches
from workflows.bmc_calls import target_of
from workflows.control_calls import control_call

T = TypeVar("T")

# Histories recorded before a host told its shard what its own BMC calls found asked only once
# (and again when the BMC changed), and acted on a reading its own later BMC call had overtaken.
KNOWS_PATCH = "power-watch-what-the-host-knows"


class PowerWatcher:
    """The shard keeps a record of what the host knows, to signal only what differs. The host's
    own BMC calls (power actions, steps) find things out too: a reading that arrived before such
    a call ended is older than its result and is dropped (`own`), and at rest the host
    tells the shard what it knows whenever that differs from the shard's record as the host last
    saw it. `seq` orders the two: the shard takes the host's word only from a host that has heard
    every reading it was told (metalflow.api.power_sync.PowerWatch.seq)."""

    def __init__(self, ref: HostRef, batched: bool, seq: int = 0) -> None:
        self._ref = ref
        self.batched = batched
        self.seq = seq  # the last reading heard (kept across continue-as-new)
        self._told: BMCTarget | None = None  # the BMC the shard reads for this host, if watched
        self._held: PowerWatch | None = None  # the shard's record of this host, as last seen here
        self._seen: PowerReading | None = None  # the shard's latest signal, not yet acted on

    def seen(self, reading: PowerReading) -> None:
        self._seen = reading
        self.seq = max(self.seq, reading.seq)
        if self._held is not None:
            self._held = self._held.model_copy(
                update={
                    "powered_on": reading.powered_on if not reading.error else self._held.powered_on,
                    "failing": bool(reading.error),
                    "seq": self.seq,
                }
            )

    def take(self) -> PowerReading | None:
        reading, self._seen = self._seen, None
        return reading

    async def own(self, call: Awaitable[T]) -> T:
        """The host's own BMC call (or step): once it ends, a reading not yet acted on is older
        than what the call found, and is dropped."""
        try:
            return await call
        finally:
            if self.batched and self._seen is not None and patches.patched(KNOWS_PATCH):
                self._seen = None

    async def rest(
        self, resting: bool, spec: HostSpec, status: HostStatus, interval: int, changed: Callable[[], bool]
    ) -> PowerReading | None:
        """Watched while resting (else not), until something changes: the reading, if that was it."""
        await (self.watch(spec, status, interval) if resting else self.unwatch(interval))
        # a reading signalled during a back-off is still pending: it is the change
        await workflow.wait_condition(lambda: changed() or self._seen is not None)
        return self.take()

    async def watch(self, spec: HostSpec, status: HostStatus, interval: int) -> None:
        """Ask to be watched, and tell the shard what the host knows when that is not what the
        shard holds (histories before KNOWS_PATCH: ask once, and again when the BMC changes)."""
        target = target_of(spec)
        want = PowerWatch(
            host_id=self._ref.workflow_id,
            target=target,
            powered_on=status.powered_on,
            failing=status.error_type == POWER_SYNC.error_type,
        )
        if not patches.patched(KNOWS_PATCH):
            if target != self._told:
                await self._request(interval, want, "watch this host's power")
                self._told = target
            return
        want.seq = self.seq
        if self._seen is not None or want == self._held:
            return  # a reading waits to be acted on first, or the shard knows it all
        await self._request(interval, want, "watch this host's power")
        self._told, self._held = target, want

    async def unwatch(self, interval: int) -> None:
        if self._told is None:
            return
        await self._request(interval, None, "stop watching this host's power")
        self._told, self._held = None, None

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
