"""PowerSyncWorkflow: one per namespace and shard (`power-sync/<ns>/<shard>`), Ironic's power
sync for the resting hosts that asked it to watch them (metalflow.api.power_sync).

Every interval one activity reads all the shard's BMCs and returns only the hosts whose power,
or BMC reachability, is not what they last knew; each of those gets a `power_seen` signal and
acts on it as a host reading its own power would (rules bring it back to spec.online, a BMC
that stops answering is a power management error). Hosts unchanged cost nothing in any
history but this one's (one activity a round for the whole shard). Hosts watch and unwatch by
signal; the watched set is carried across continue-as-new.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

from metalflow.api.power_sync import (
    POWER_READ_BATCH,
    POWER_SEEN_SIGNAL,
    POWER_SYNC_WORKFLOW,
    POWER_UNWATCH_SIGNAL,
    POWER_WATCH_LIST_QUERY,
    POWER_WATCH_SIGNAL,
    SHARDS,
    PowerBatch,
    PowerBatchResult,
    PowerReading,
    PowerSyncState,
    PowerWatch,
    PowerWatchList,
)
from workflows.options import BMC_HEARTBEAT

ROUNDS_PER_RUN = 24  # the watched set, carried across continue-as-new, is the run's biggest event
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
READ_RETRY = RetryPolicy(maximum_attempts=2)  # a failed round is simply the next round's to redo
READ_FOR = 0.8  # of the interval: no read starts later in a round
READ_GRACE = timedelta(seconds=90)  # reads in flight then: two tries of a BMC's connect + read timeouts


def next_round(now: datetime, interval: timedelta, phase: timedelta) -> datetime:
    """The next round after `now` on a fixed clock: every `interval`, at `phase` into it. Rounds
    stay on time however long one takes (a round that overruns skips to the next slot), and the
    shards' phases spread their reads over the interval instead of all BMCs at once."""
    since = now - EPOCH - phase
    return EPOCH + phase + (since // interval + 1) * interval


def told_record(watch: PowerWatch, reading: PowerReading) -> PowerWatch:
    """The shard's record once it tells the host this reading: what the host will know (a failed
    read leaves its power as it was), one more reading told."""
    return watch.model_copy(
        update={
            "powered_on": reading.powered_on if not reading.error else watch.powered_on,
            "failing": bool(reading.error),
            "seq": watch.seq + 1,
        }
    )


@workflow.defn(name=POWER_SYNC_WORKFLOW)
class PowerSyncWorkflow:
    @workflow.init
    def __init__(self, state: PowerSyncState) -> None:
        self._s = state

    @workflow.signal(name=POWER_WATCH_SIGNAL)
    def watch(self, watch: PowerWatch) -> None:
        """A host comes with what it knows (its own BMC calls find things out too). A known host's
        knowledge is taken only if it has heard every reading this shard told it (`seq`); else
        only its BMC target: a watch sent before the host heard a reading must not undo that
        reading here, or the shard would stay silent when the BMC changes back."""
        known = self._s.watched.get(watch.host_id)
        if known is None or watch.seq == known.seq:
            self._s.watched[watch.host_id] = watch
        else:
            self._s.watched[watch.host_id] = known.model_copy(update={"target": watch.target})
        self._s.generation += 1

    @workflow.signal(name=POWER_UNWATCH_SIGNAL)
    def unwatch(self, host_id: str) -> None:
        if self._s.watched.pop(host_id, None) is not None:
            self._s.generation += 1

    @workflow.query
    def watched(self) -> list[str]:
        return sorted(self._s.watched)

    @workflow.query(name=POWER_WATCH_LIST_QUERY)
    def watch_list(self) -> PowerWatchList:
        """What a round reads (activities/power_sync.py asks when its copy is older)."""
        return PowerWatchList(generation=self._s.generation, watched=list(self._s.watched.values()))

    @workflow.run
    async def run(self, state: PowerSyncState) -> None:
        interval = timedelta(seconds=self._s.interval_seconds)
        phase = interval * self._s.shard / SHARDS
        for _ in range(ROUNDS_PER_RUN):
            await workflow.sleep(next_round(workflow.now(), interval, phase) - workflow.now())
            if self._s.watched:
                await self._round()
            if workflow.info().is_continue_as_new_suggested():
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self._s)

    async def _round(self) -> None:
        read_for = self._s.interval_seconds * READ_FOR
        batch = PowerBatch(
            shard=workflow.info().workflow_id,
            generation=self._s.generation,
            behind=self._s.behind,
            read_for_seconds=read_for,
        )
        hosts = len(self._s.watched)
        try:
            result = await workflow.execute_activity(
                POWER_READ_BATCH,
                batch,
                result_type=PowerBatchResult,
                start_to_close_timeout=timedelta(seconds=read_for) + READ_GRACE,
                heartbeat_timeout=BMC_HEARTBEAT,
                retry_policy=READ_RETRY,
                summary=f"read power of {hosts} hosts",
            )
        except ActivityError as err:
            workflow.logger.warning("power sync %s: round failed: %s", self._s.shard, err.cause or err)
            return
        self._s.behind = result.unread
        if result.unread:
            workflow.logger.warning(
                "power sync %s: %d of %d hosts not read within %ds (BMCs slow to answer): first next round",
                self._s.shard,
                len(result.unread),
                hosts,
                int(read_for),
            )
        await asyncio.gather(*(self._tell(reading) for reading in result.changed))

    async def _tell(self, reading: PowerReading) -> None:
        """Signal the host; remember what it was told (a host gone meanwhile is dropped). A host
        that changed its power itself hears it once more: it then finds nothing to do."""
        watch = self._s.watched.get(reading.host_id)
        if watch is None:
            return  # unwatched while the round ran
        told = told_record(watch, reading)
        self._s.watched[reading.host_id] = told
        self._s.generation += 1
        reading = reading.model_copy(update={"seq": told.seq})
        try:
            await workflow.get_external_workflow_handle(reading.host_id).signal(POWER_SEEN_SIGNAL, reading)
        except FailureError as err:  # not found: the host's workflow ended
            workflow.logger.info("power sync: dropping %s: %s", reading.host_id, err)
            if self._s.watched.pop(reading.host_id, None) is not None:
                self._s.generation += 1
