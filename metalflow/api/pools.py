"""Host-pool contracts: claims and machine sets (activity and workflow names, payloads, ids)."""

from __future__ import annotations

from pydantic import Field

from metalflow.api.claims import Claim, ClaimSpec, ClaimStatus, MachineSetSpec
from metalflow.api.models import (
    ConsumerRef,
    HostRef,
    Model,
)

# ---- host pools: claims and machine sets ----
POOL_CANDIDATES = "pool.candidates"
POOL_ASSIGN = "pool.assign"
POOL_RELEASE = "pool.release"
POOL_STATUS = "pool.status"
POOL_CLAIM = "pool.claim"
POOL_UNCLAIM = "pool.unclaim"
ALLOCATOR_WORKFLOW = "AllocatorWorkflow"
MACHINESET_WORKFLOW = "MachineSetWorkflow"


class Assignment(Model):
    claim_id: str
    host: HostRef
    spec: ClaimSpec | None = None
    consumer: ConsumerRef | None = Field(default=None, description="consumerRef to set; a Claim's by default")


class HostHealth(Model):
    host: HostRef
    state: str
    error_type: str = ""
    image_url: str = Field(default="", description="The image provisioned now")
    spec_image_url: str = Field(default="", description="The image asked for")
    exists: bool = True


def allocator_id(namespace: str) -> str:
    return f"allocator/{namespace}"


def machineset_id(namespace: str, name: str) -> str:
    return f"machineset/{namespace}/{name}"


class AllocatorState(Model):
    namespace: str
    claims: dict[str, Claim] = Field(default_factory=dict)
    statuses: dict[str, ClaimStatus] = Field(default_factory=dict)


class MachineSetInput(Model):
    namespace: str
    name: str
    spec: MachineSetSpec
    members: dict[str, HostRef | None] = Field(default_factory=dict)
    pending_reasons: dict[str, str] = Field(default_factory=dict)
    seq: int = 0
    replaced: int = 0
