"""Fleet servicing campaigns: one firmware change rolled across the provisioned hosts a label
selector picks, canary first, then waves, halted by a failure budget (workflows/campaign.py).

The change is what a host's HostFirmwareSettings / HostFirmwareComponents carry, applied by the
host's own servicing at a reboot the campaign asks for (HostUpdatePolicy `onReboot`): the
campaign never talks to a BMC to change anything, it only sequences the hosts.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from metalflow.api.firmware import desired_values
from metalflow.api.firmware_components import FirmwareUpdate
from metalflow.api.model_base import Model
from metalflow.api.models import HostRef, HostSpec, JoinedNode

CAMPAIGN_WORKFLOW = "CampaignWorkflow"
CAMPAIGN_TARGETS = "campaign.targets"
CAMPAIGN_APPLY = "campaign.apply_change"
CAMPAIGN_WAIT = "campaign.wait_healthy"
CAMPAIGN_DRIFT = "campaign.drift"
CAMPAIGN_NODE_DRAIN = "campaign.drain_node"
CAMPAIGN_NODE_READY = "campaign.uncordon_when_ready"
PAUSE_SIGNAL, RESUME_SIGNAL, ABORT_SIGNAL = "pause", "resume", "abort"
STATUS_QUERY = "status"


def campaign_workflow_id(namespace: str, name: str) -> str:
    return f"campaign/{namespace}/{name}"


class CampaignChange(Model):
    """What every host gets: BIOS settings (HostFirmwareSettings) and/or firmware updates."""

    firmware_settings: dict[str, str] = Field(default_factory=dict)
    firmware_updates: list[FirmwareUpdate] = Field(default_factory=list)

    @field_validator("firmware_settings", mode="before")
    @classmethod
    def _as_text(cls, v: object) -> object:
        return desired_values(v) if isinstance(v, dict) else v  # IntOrString, as HostFirmwareSettings

    @model_validator(mode="after")
    def _something(self) -> CampaignChange:
        if not self.firmware_settings and not self.firmware_updates:
            raise ValueError(
                "spec.change: give firmwareSettings and/or firmwareUpdates: a campaign changes something"
            )
        return self


class LabelSelector(Model):
    match_labels: dict[str, str] = Field(
        min_length=1, description="the hosts' labels (spec.labels / BareMetalHost labels), all of them"
    )


class CampaignSpec(Model):
    selector: LabelSelector
    change: CampaignChange
    canary: int = Field(default=1, ge=0, description="hosts updated alone first; one failure halts")
    max_unavailable: int = Field(default=1, ge=1, description="hosts updated at once in each wave")
    failure_budget: int = Field(default=0, ge=0, description="failed hosts tolerated; one more halts")
    health_timeout_seconds: int = Field(
        default=3600, ge=60, description="per host: reboot, servicing and back to provisioned"
    )


class Campaign(Model):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str = "default"
    spec: CampaignSpec

    @property
    def workflow_id(self) -> str:
        return campaign_workflow_id(self.namespace, self.name)


class CampaignPhase(StrEnum):
    CHECKING = "Checking"  # the change against every host's BMC registry, before any host is touched
    RUNNING = "Running"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    HALTED = "Halted"  # the canary failed or the failure budget is spent: the rest untouched
    ABORTED = "Aborted"
    FAILED = "Failed"  # nothing was touched: the change is invalid for some host


ENDED = frozenset(
    {CampaignPhase.SUCCEEDED, CampaignPhase.HALTED, CampaignPhase.ABORTED, CampaignPhase.FAILED}
)


class HostPhase(StrEnum):
    PENDING = "Pending"
    UPDATING = "Updating"
    DONE = "Done"
    FAILED = "Failed"
    SKIPPED = "Skipped"  # matched but not provisioned: servicing is for provisioned hosts


class CampaignHost(Model):
    ref: HostRef
    phase: HostPhase = HostPhase.PENDING
    wave: int = Field(default=-1, description="0 is the canary wave; -1: in none")
    message: str = ""


class CampaignDrift(Model):
    """A selected host whose firmware differs from the campaign's change, and how."""

    ref: HostRef
    differences: list[str]


class CampaignStatus(Model):
    phase: CampaignPhase = CampaignPhase.CHECKING
    wave: int = Field(default=-1, description="the wave running or last run; 0 is the canary")
    waves: int = 0
    hosts: list[CampaignHost] = Field(default_factory=list)
    message: str = ""
    drift: list[CampaignDrift] = Field(
        default_factory=list, description="when it ended: the selected hosts still differing from the change"
    )

    def count(self, phase: HostPhase) -> int:
        return sum(1 for h in self.hosts if h.phase == phase)

    @property
    def total(self) -> int:
        return sum(1 for h in self.hosts if h.phase != HostPhase.SKIPPED)


class CampaignSelect(Model):
    namespace: str
    selector: LabelSelector


class CampaignTarget(Model):
    """A selected host as the campaign sees it at the start (its spec carries references only)."""

    ref: HostRef
    spec: HostSpec
    state: str
    managed_by_kubernetes: bool = False
    node: JoinedNode | None = Field(default=None, description="the Node it joined as: drained, then Ready")


def waves(count: int, canary: int, max_unavailable: int) -> list[list[int]]:
    """Host indexes per wave: the canary wave (when canary > 0), then waves of max_unavailable."""
    first = min(canary, count)
    out = [list(range(first))] if first else []
    out += [list(range(i, min(i + max_unavailable, count))) for i in range(first, count, max_unavailable)]
    return out


class HostChange(Model):
    host: HostRef
    change: CampaignChange
    campaign: str = Field(description="the campaign's workflow id, for the host's log")


class DriftRequest(Model):
    hosts: list[HostRef]
    change: CampaignChange


class HostOutcome(Model):
    ok: bool
    message: str = ""
