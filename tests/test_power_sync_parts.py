"""The batched power sync's parts without a server: what counts as a change, how a shard keeps
its record of what it told each host, how a BMC failure becomes a reading, and the sharding.
tests/test_power_check.py runs the whole thing against the dev server and an emulated BMC."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import power_sync as activity
from metalflow.api.bmc import BMCTarget
from metalflow.api.models import SecretRef
from metalflow.api.power_sync import (
    POWER_WATCH_LIST_QUERY,
    SHARDS,
    PowerBatch,
    PowerReading,
    PowerSyncState,
    PowerWatch,
    PowerWatchList,
    batch_order,
    shard_of,
)
from workflows.power_sync import PowerSyncWorkflow, next_round, told_record

CREDS = SecretRef(name="bmc", namespace="ns")


def watch(
    host: str = "host/ns/a", on: bool = True, failing: bool = False, address: str = "redfish://a"
) -> PowerWatch:
    return PowerWatch(
        host_id=host, target=BMCTarget(address=address, credentials=CREDS), powered_on=on, failing=failing
    )


@pytest.mark.parametrize(
    ("known", "reading", "changed"),
    [
        (watch(on=True), PowerReading(host_id="h", powered_on=True), False),
        (watch(on=True), PowerReading(host_id="h", powered_on=False), True),
        (watch(on=False), PowerReading(host_id="h", powered_on=True), True),
        (watch(), PowerReading(host_id="h", error="401", error_type="BMCAuthError"), True),
        (watch(failing=True), PowerReading(host_id="h", error="401", error_type="BMCAuthError"), False),
        (watch(failing=True), PowerReading(host_id="h", powered_on=True), True),  # answers again
    ],
)
def test_only_a_change_from_what_the_host_was_told_is_signalled(
    known: PowerWatch, reading: PowerReading, changed: bool
) -> None:
    assert activity.differs(known, reading) is changed


def test_a_shard_takes_a_hosts_word_only_once_the_host_has_heard_every_reading() -> None:
    shard = PowerSyncWorkflow(PowerSyncState(namespace="ns", shard=0, interval_seconds=60))
    shard.watch(watch(on=True))
    bad = PowerReading(host_id="host/ns/a", error="503", error_type="BMCServerError")
    shard._s.watched["host/ns/a"] = told_record(shard._s.watched["host/ns/a"], bad)  # told: seq 1
    # a watch the host sent before it heard that reading must not undo it here
    shard.watch(watch(on=True, failing=False, address="redfish://new"))
    kept = shard._s.watched["host/ns/a"]
    assert kept.failing and kept.seq == 1 and kept.target.address == "redfish://new"
    # once it has heard it, what the host's own BMC calls found since is the record
    shard.watch(watch(on=False, failing=False, address="redfish://new").model_copy(update={"seq": 1}))
    taken = shard._s.watched["host/ns/a"]
    assert not taken.failing and not taken.powered_on and taken.seq == 1


class Driver:
    def __init__(self, failures: list[BaseException], on: bool = True) -> None:
        self.failures, self.on, self.calls = failures, on, 0

    def validate(self) -> Any:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return type("Checked", (), {"powered_on": self.on})()


@pytest.mark.parametrize(
    ("failures", "want_calls", "want"),
    [
        ([], 1, PowerReading(host_id="host/ns/a", powered_on=False)),
        (  # a permanent failure counts at once, with the BMC's message and type
            [ApplicationError("rejected the credentials", type="BMCAuthError", non_retryable=True)],
            1,
            PowerReading(host_id="host/ns/a", error="rejected the credentials", error_type="BMCAuthError"),
        ),
        (  # a transient one is tried once more
            [ApplicationError("timed out", type="BMCTimeout")],
            2,
            PowerReading(host_id="host/ns/a", powered_on=False),
        ),
        (
            [OSError("connection refused"), OSError("connection refused")],
            2,
            PowerReading(host_id="host/ns/a", error="connection refused", error_type="OSError"),
        ),
    ],
)
def test_a_bmc_read_becomes_a_reading(
    monkeypatch: pytest.MonkeyPatch, failures: list[BaseException], want_calls: int, want: PowerReading
) -> None:
    driver = Driver(failures, on=False)
    monkeypatch.setattr(activity, "open_driver", lambda target: driver)
    assert activity.read_one(watch()) == want
    assert driver.calls == want_calls


def test_rounds_keep_a_fixed_clock_spread_by_shard() -> None:
    minute = timedelta(minutes=1)
    at = datetime(2026, 12, 6, 2, 0, 0, tzinfo=UTC)
    assert next_round(at, minute, timedelta(0)) == at + minute  # exactly on a slot: the next one
    assert next_round(at + timedelta(seconds=59), minute, timedelta(0)) == at + minute
    # a round that overran two slots goes to the next one, not to the ones it missed
    assert next_round(at + timedelta(seconds=150), minute, timedelta(0)) == at + 3 * minute
    phases = {next_round(at, minute, minute * k / SHARDS) - at for k in range(SHARDS)}
    assert len(phases) == SHARDS and max(phases) - min(phases) < minute


def test_hosts_spread_over_the_shards_the_same_way_in_every_process() -> None:
    assert shard_of("host/default/node-0") == shard_of("host/default/node-0") < SHARDS
    assert len({shard_of(f"host/default/node-{i}") for i in range(200)}) == SHARDS


def test_a_round_starts_no_read_after_its_time_and_names_the_hosts_it_did_not_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BMCs hanging on their timeouts: the round ends with what it read, the rest `unread`
    (before, the round's one activity timed out and no host heard anything)."""
    release = threading.Event()

    def read(w: PowerWatch) -> PowerReading:
        if w.host_id.startswith("host/ns/hung"):
            release.wait(timeout=1.0)  # a BMC hanging (bounded: the test never releases it)
        return PowerReading(host_id=w.host_id, powered_on=False)

    monkeypatch.setattr(activity, "read_one", read)
    monkeypatch.setattr(activity, "READERS", 2)
    hosts = ["host/ns/hung-1", "host/ns/hung-2", "host/ns/c", "host/ns/d"]
    batch = PowerBatch(watched=[watch(h) for h in hosts], read_for_seconds=0.2)
    result = asyncio.run(ActivityEnvironment().run(activity.read_batch, batch))
    assert result.unread == ["host/ns/c", "host/ns/d"]
    assert result.read == 2 and [r.host_id for r in result.changed] == hosts[:2]
    everything = asyncio.run(
        ActivityEnvironment().run(activity.read_batch, batch.model_copy(update={"read_for_seconds": 0}))
    )
    assert everything.unread == [] and everything.read == 4


def test_the_hosts_a_round_did_not_reach_are_read_first_in_the_next() -> None:
    watched = [watch(h) for h in ("host/ns/a", "host/ns/b", "host/ns/c")]
    order = batch_order(watched, ["host/ns/c", "host/ns/gone"])
    assert [w.host_id for w in order] == ["host/ns/c", "host/ns/a", "host/ns/b"]


class Shard:
    """A stand-in for the client's handle on a shard: counts `watch_list` queries."""

    def __init__(self, watched: list[PowerWatch], generation: int) -> None:
        self.list = PowerWatchList(generation=generation, watched=watched)
        self.queries = 0

    def get_workflow_handle(self, workflow_id: str, run_id: str | None = None) -> Shard:
        assert workflow_id == "power-sync/ns/3"
        return self

    async def query(self, name: str, result_type: Any) -> PowerWatchList:
        assert name == POWER_WATCH_LIST_QUERY
        self.queries += 1
        return self.list


def test_a_round_reads_the_shards_list_only_when_its_copy_is_older(monkeypatch: pytest.MonkeyPatch) -> None:
    """A round's input names the shard and its generation, not every BMC target; the worker asks
    the shard for its list once, and again only when the generation has moved past its copy."""
    monkeypatch.setattr(activity, "_lists", type(activity._lists)())
    monkeypatch.setattr(activity, "read_one", lambda w: PowerReading(host_id=w.host_id, powered_on=True))
    shard = Shard([watch("host/ns/a"), watch("host/ns/b", on=False)], generation=5)
    env = ActivityEnvironment(client=shard)  # type: ignore[arg-type]
    batch = PowerBatch(shard="power-sync/ns/3", generation=5)

    def round_(b: PowerBatch) -> list[str]:
        return [r.host_id for r in asyncio.run(env.run(activity.read_batch, b)).changed]

    assert round_(batch) == ["host/ns/b"] and shard.queries == 1
    assert round_(batch) == ["host/ns/b"] and shard.queries == 1  # at rest: the copy is current
    shard.list = PowerWatchList(generation=6, watched=[watch("host/ns/a"), watch("host/ns/b", on=True)])
    assert round_(batch.model_copy(update={"generation": 6})) == [] and shard.queries == 2
    # a round scheduled by an older shard carries its hosts, and those are read
    assert round_(PowerBatch(watched=[watch("host/ns/c", on=False)])) == ["host/ns/c"] and shard.queries == 2
