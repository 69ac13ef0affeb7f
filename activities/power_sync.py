"""Batched power sync activities (metalflow.api.power_sync): a shard's BMC reads, and a host's
watch request (signal-with-start of its shard's PowerSyncWorkflow)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from temporalio import activity
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from activities.bmc.registry import open_driver
from metalflow.api.power_sync import (
    POWER_READ_BATCH,
    POWER_SYNC_WORKFLOW,
    POWER_UNWATCH_SIGNAL,
    POWER_WATCH_LIST_QUERY,
    POWER_WATCH_REQUEST,
    POWER_WATCH_SIGNAL,
    PowerBatch,
    PowerBatchResult,
    PowerReading,
    PowerSyncState,
    PowerWatch,
    PowerWatchList,
    PowerWatchRequest,
    batch_order,
    power_sync_id,
    shard_of,
)

READERS = 32  # BMC reads in flight per batch: each is mostly waiting on the network
HEARTBEAT_EVERY = 2.0
LISTS_KEPT = 256  # shards (runs) whose watch list this worker keeps between rounds
_lists: OrderedDict[tuple[str, str], PowerWatchList] = OrderedDict()
_lists_lock = threading.Lock()


def read_one(watch: PowerWatch) -> PowerReading:
    """The same check registration makes (credentials, system); a transient failure is tried
    once more before it counts (Ironic retries a power sync read too)."""
    for attempt in (1, 2):
        try:
            on = open_driver(watch.target).validate().powered_on
            return PowerReading(host_id=watch.host_id, powered_on=on)
        except ApplicationError as err:
            if err.non_retryable or attempt == 2:
                return PowerReading(host_id=watch.host_id, error=err.message, error_type=err.type or "")
        except Exception as err:  # any driver failure is this host's reading
            if attempt == 2:
                return PowerReading(host_id=watch.host_id, error=str(err), error_type=type(err).__name__)
    raise AssertionError("unreachable")


def differs(watch: PowerWatch, reading: PowerReading) -> bool:
    if reading.error:
        return not watch.failing
    return watch.failing or reading.powered_on != watch.powered_on


async def watch_list(batch: PowerBatch) -> list[PowerWatch]:
    """The round's hosts: given (a round scheduled by an older shard), or the shard's watch list,
    asked of it only when this worker's copy for the run is older than the round's generation
    (at rest, once per run: the list changes only when a host comes, goes or is told something)."""
    if batch.watched or not batch.shard:
        return batch.watched
    key = (batch.shard, activity.info().workflow_run_id or "")
    with _lists_lock:
        kept = _lists.get(key)
    if kept is None or kept.generation < batch.generation:
        handle = activity.client().get_workflow_handle(batch.shard, run_id=key[1] or None)
        kept = await handle.query(POWER_WATCH_LIST_QUERY, result_type=PowerWatchList)
        with _lists_lock:
            _lists[key] = kept
            _lists.move_to_end(key)
            while len(_lists) > LISTS_KEPT:
                _lists.popitem(last=False)
    return kept.watched


@activity.defn(name=POWER_READ_BATCH)
async def read_batch(batch: PowerBatch) -> PowerBatchResult:
    """Read the watched BMCs in their order, READERS at a time; return only what changed. No
    read starts after `read_for_seconds`: a shard of BMCs hanging on their timeouts ends its
    round with what it read (the rest is `unread`, first in the next round) instead of timing
    out with nothing told to anyone."""
    start = time.monotonic()
    order = batch_order(await watch_list(batch), batch.behind)
    changed: list[PowerReading] = []
    queue = list(reversed(order))  # pop() takes them in the given order
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="power-sync") as pool:
        pending: dict[asyncio.Future[PowerReading], PowerWatch] = {}
        while queue or pending:
            open_ = not batch.read_for_seconds or time.monotonic() - start < batch.read_for_seconds
            while queue and open_ and len(pending) < READERS:
                watch = queue.pop()
                pending[loop.run_in_executor(pool, read_one, watch)] = watch
            if not pending:
                break  # time is up and nothing is in flight
            done, _ = await asyncio.wait(
                pending, timeout=HEARTBEAT_EVERY, return_when=asyncio.FIRST_COMPLETED
            )
            for future in done:
                watch = pending.pop(future)
                reading = future.result()
                if differs(watch, reading):
                    changed.append(reading)
            activity.heartbeat(len(order) - len(queue) - len(pending))
    changed.sort(key=lambda r: r.host_id)  # the same set reads the same, whatever came first
    unread = [w.host_id for w in reversed(queue)]
    return PowerBatchResult(
        changed=changed,
        read=len(order) - len(unread),
        seconds=time.monotonic() - start,
        unread=unread,
    )


@activity.defn(name=POWER_WATCH_REQUEST)
async def request(req: PowerWatchRequest) -> None:
    """Watch or unwatch one host in its shard, starting the shard if it is not running."""
    shard = shard_of(req.host_id)
    signal, arg = (
        (POWER_WATCH_SIGNAL, req.watch) if req.watch is not None else (POWER_UNWATCH_SIGNAL, req.host_id)
    )
    await activity.client().start_workflow(
        POWER_SYNC_WORKFLOW,
        PowerSyncState(namespace=req.namespace, shard=shard, interval_seconds=req.interval_seconds),
        id=power_sync_id(req.namespace, shard),
        task_queue=req.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"power sync for namespace {req.namespace}, shard {shard}",
        start_signal=signal,
        start_signal_args=[arg],
    )


ACTIVITIES = [read_batch, request]
