"""Batched power sync contracts (Ironic's conductor-wide power sync), names and payloads.

Per host, a resting HostWorkflow reads its own power on a timer: one timer, one workflow task
and one marker per host per check, ~27 ms of control-plane CPU each, so 10,000 hosts read every
5 minutes cost most of a core (issue 28). Batched (`METALFLOW_POWER_SYNC=batched`): a resting
host asks its shard's `PowerSyncWorkflow` (`power-sync/<namespace>/<shard>`) to watch it, and
that workflow reads all its hosts' BMCs in one activity per interval, signalling only the hosts
whose power (or BMC reachability) is not what they last knew. A host at rest then costs nothing
between changes. Payloads carry BMC addresses and secret references, never the secrets.
"""

from __future__ import annotations

import zlib

from pydantic import Field

from metalflow.api.bmc import BMCTarget
from metalflow.api.models import Model

POWER_SYNC_WORKFLOW = "PowerSyncWorkflow"
POWER_READ_BATCH = "bmc.power.read_batch"  # activity: read every watched BMC once
POWER_WATCH_REQUEST = "power_sync.request"  # activity: signal-with-start a shard (watch/unwatch)

POWER_WATCH_SIGNAL = "watch"
POWER_UNWATCH_SIGNAL = "unwatch"
POWER_SEEN_SIGNAL = "power_seen"  # to a host: its power is not what it last knew
POWER_WATCH_LIST_QUERY = "watch_list"  # a shard's watched hosts (PowerWatchList), for its reads

SHARDS = 16  # a shard's state (~250 bytes a host) is carried across continue-as-new
PER_HOST = "per-host"
BATCHED = "batched"


def shard_of(host_id: str) -> int:
    """Stable across processes and Python versions (unlike hash())."""
    return zlib.crc32(host_id.encode()) % SHARDS


def power_sync_id(namespace: str, shard: int) -> str:
    return f"power-sync/{namespace}/{shard}"


class PowerWatch(Model):
    """A resting host as its shard watches it, and what the host last knew."""

    host_id: str = Field(description="The HostWorkflow's id: where a change is signalled.")
    target: BMCTarget
    powered_on: bool
    failing: bool = Field(default=False, description="The host shows a power management error.")
    seq: int = Field(
        default=0,
        ge=0,
        description="In the shard's record: readings told so far. In a host's watch: the last one it "
        "received. The shard takes a host's power and failing only when they match: a host that has "
        "not yet heard the shard's latest reading cannot undo it.",
    )


class PowerWatchRequest(Model):
    """Watch (with `watch`) or stop watching (`watch` None) one host; started if not running."""

    namespace: str
    host_id: str
    task_queue: str
    interval_seconds: int = Field(gt=0)
    watch: PowerWatch | None = None


class PowerReading(Model):
    """One BMC read: power, or why the BMC did not answer (message and error type, no secrets)."""

    host_id: str
    powered_on: bool = False
    error: str = ""
    error_type: str = ""
    seq: int = Field(default=0, ge=0, description="Set by the shard when it tells the host (PowerWatch.seq).")


class PowerWatchList(Model):
    """A shard's watched hosts as of `generation` (bumped by every change to them)."""

    generation: int = 0
    watched: list[PowerWatch] = Field(default_factory=list)


class PowerBatch(Model):
    """One round's reads. The hosts come from the shard's `watch_list` query, which a worker
    asks again only when the shard's generation has moved past its copy: a round's input (in
    the shard's history) no longer repeats every host's BMC target. `watched` is the old way
    (rounds scheduled before), still read when given."""

    watched: list[PowerWatch] = Field(default_factory=list)
    shard: str = Field(default="", description="The shard's workflow id, whose watch_list to read.")
    generation: int = Field(
        default=0, ge=0, description="The shard's generation when it scheduled the round."
    )
    behind: list[str] = Field(default_factory=list, description="Not read last round: read first.")
    read_for_seconds: float = Field(
        default=0, ge=0, description="Start no read after this long (0: read them all); the rest is unread."
    )


class PowerBatchResult(Model):
    """Only the readings that differ from what their hosts last knew (the history stays small)."""

    changed: list[PowerReading] = Field(default_factory=list)
    read: int = 0
    seconds: float = 0.0
    unread: list[str] = Field(
        default_factory=list, description="Hosts not read before the round's time was up (BMCs hanging)."
    )


class PowerSyncState(Model):
    """A shard's input, also what it carries across continue-as-new."""

    namespace: str
    shard: int
    interval_seconds: int = Field(gt=0)
    watched: dict[str, PowerWatch] = Field(default_factory=dict)
    behind: list[str] = Field(default_factory=list, description="Not read last round: read first next.")
    generation: int = Field(
        default=0,
        ge=0,
        description="Bumped by every change to `watched`: a worker's copy is current while equal.",
    )


def batch_order(watched: list[PowerWatch], behind: list[str]) -> list[PowerWatch]:
    """A round's reads: the hosts the last round did not reach first, then the rest in order of
    watching, so a shard slower than its interval still reads every host in turn."""
    late = set(behind)
    by_id = {w.host_id: w for w in watched}
    first = [by_id[h] for h in behind if h in by_id]
    return first + [w for w in watched if w.host_id not in late]
