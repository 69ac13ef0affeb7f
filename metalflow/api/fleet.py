"""Fleet contracts: the provisioning limit and fleet runs (names and secret-free payloads).

metal3 bounds how many hosts of a namespace are in provisioning-type states at once
(PROVISIONING_LIMIT, default 20); hosts over the limit keep their state and show
operationalStatus "delayed". Here one `ProvisioningLimiter` workflow per namespace
(`limiter/<ns>`) hands out those slots; a `FleetWorkflow` drives many hosts and reports.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, model_validator

from metalflow.api.models import Host, Model

LIMITER_WORKFLOW = "ProvisioningLimiter"
FLEET_WORKFLOW = "FleetWorkflow"

LIMITER_REQUEST = "limiter.request"
LIMITER_CONFIGURE = "limiter.configure"
LIMITER_GONE = "limiter.gone"
FLEET_APPLY = "fleet.apply"
FLEET_OBSERVE = "fleet.observe"

# A fleet too big for one payload gets its hosts in parts: the first in its input, the rest
# by this signal (FleetHosts); its `members` query names the hosts it watches.
FLEET_HOSTS_SIGNAL = "hosts"
FLEET_MEMBERS_QUERY = "members"

# Signals: a host asks (request) and gives back (release); the limiter answers each request
# with slot_queued or slot_granted, and sends slot_granted later to a queued host.
SLOT_REQUEST_SIGNAL = "request"
SLOT_RELEASE_SIGNAL = "release"
SLOT_GRANTED_SIGNAL = "slot_granted"
SLOT_QUEUED_SIGNAL = "slot_queued"

DEFAULT_LIMIT = 20  # metal3's PROVISIONING_LIMIT default


def limiter_id(namespace: str) -> str:
    return f"limiter/{namespace}"


class LimiterState(Model):
    """The limiter's durable state (also what it carries across continue-as-new)."""

    namespace: str
    limit: int = Field(default=DEFAULT_LIMIT, gt=0)
    holders: list[str] = Field(default_factory=list, description="Host workflow ids holding a slot.")
    waiting: list[str] = Field(default_factory=list, description="First come, first served.")
    peak: int = Field(default=0, description="Most slots ever held at once (for audits and tests).")
    grants: int = 0
    delayed: int = Field(default=0, description="Requests that had to wait for a slot.")
    check_holders_seconds: float = Field(
        default=60, gt=0, description="While hosts wait, how often to free slots of ended holders."
    )


class SlotRequest(Model):
    namespace: str
    holder: str  # the host's workflow id
    task_queue: str  # where to start the limiter if it is not running yet


class LimitRequest(Model):
    namespace: str
    limit: int = Field(gt=0)
    task_queue: str


class FleetApply(Model):
    hosts: list[Host]
    task_queue: str


class ApplyOutcome(Model):
    name: str
    namespace: str
    started: bool = False
    error: str = ""


class FleetObserve(Model):
    namespace: str
    names: list[str] = Field(default_factory=list)
    without_image: list[str] = Field(default_factory=list, description="Hosts that settle at available.")
    detail: bool = False  # per-host rows for every host, not just the failed ones
    members_of: str = Field(
        default="",
        description="A fleet workflow id: the names come from its `members` query, not from this "
        "input (a poll every few seconds would otherwise copy every name into its history).",
    )


class FleetHosts(Model):
    """A part of a fleet's hosts, signalled after its start: hosts[i] is host number offset + i,
    so a part sent twice changes nothing."""

    offset: int = Field(ge=0)
    hosts: list[Host]


class HostOutcome(Model):
    name: str
    namespace: str
    state: str = ""
    operational_status: str = ""
    error_type: str = ""
    error_message: str = ""
    settled: bool = False


class FleetInput(Model):
    hosts: list[Host] = Field(description="Every host, or the first part when `total` says more follow.")
    total: int | None = Field(
        default=None,
        gt=0,
        description="How many hosts the fleet has when the rest follow by the `hosts` signal "
        "(metalflow.client.fleet.start_fleet sends a big fleet in parts of a bounded size).",
    )
    limit: int | None = Field(default=None, gt=0, description="Set each namespace's provisioning limit.")
    poll_seconds: float = Field(default=2.0, gt=0)
    timeout_seconds: float = Field(default=3600, gt=0)
    # carried across continue-as-new
    applied: bool = False
    apply_failed: list[HostOutcome] = Field(default_factory=list)
    members: list[FleetObserve] = Field(
        default_factory=list, description="Once applied, the hosts watched (names only), not their specs."
    )
    deadline: datetime | None = None

    @model_validator(mode="after")
    def _total_covers_hosts(self) -> FleetInput:
        if self.total is not None and self.total < len(self.hosts):
            raise ValueError(
                f"total: {self.total} is fewer than the {len(self.hosts)} hosts given; "
                "leave it unset, or give the number of hosts of the whole fleet"
            )
        return self


class FleetProgress(Model):
    """What a fleet looks like right now: counts, plus the hosts that failed (with why)."""

    total: int = 0
    settled: int = 0
    by_state: dict[str, int] = Field(default_factory=dict)
    delayed: int = 0
    failed: list[HostOutcome] = Field(default_factory=list)
    hosts: list[HostOutcome] = Field(default_factory=list, description="Every host (final result).")
    done: bool = False
    timed_out: bool = False

    def merge(self, other: FleetProgress) -> FleetProgress:
        by_state = dict(self.by_state)
        for k, v in other.by_state.items():
            by_state[k] = by_state.get(k, 0) + v
        return FleetProgress(
            total=self.total + other.total,
            settled=self.settled + other.settled,
            by_state=by_state,
            delayed=self.delayed + other.delayed,
            failed=self.failed + other.failed,
            hosts=self.hosts + other.hosts,
        )
