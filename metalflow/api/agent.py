"""In-band agent contracts: what the deploy ramdisk does on the host's own task queue
(`host-<namespace>.<name>`): inventory, cleaning, image and config-drive writes.

Each request carries a nonce; the agent answers with an `AgentReply`, its result proved with
its boot's agent token (metalflow/api/agent_proof.py), which a control-plane activity checks
(`AGENT_VERIFY`) before the workflow acts on it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from metalflow.api.configdrive import ConfigDriveStaged
from metalflow.api.erase import DiskErasure, EraseSpec
from metalflow.api.metal3_fields import SoftwareRAIDVolume
from metalflow.api.models import (
    HardwareDetails,
    HostRef,
    ImageSpec,
    Model,
    RootDeviceHints,
)

AGENT_INVENTORY = "agent.inventory"
AGENT_CLEAN = "agent.clean"
AGENT_WRITE_IMAGE = "agent.write_image"
AGENT_WRITE_CONFIGDRIVE = "agent.write_configdrive"
AGENT_CUSTOM_DEPLOY = "agent.custom_deploy"
AGENT_SOFTWARE_RAID = "agent.software_raid"
AGENT_VERIFY = "agent.verify_reply"  # a control-plane (local) activity: the reply's proof checked

NONCE_DOC = "This request's nonce (made by the workflow): the reply's proof covers it"


class InventoryRequest(Model):
    nonce: str = Field(default="", description=NONCE_DOC)


class AgentReply(Model):
    """What the agent answers a request that has a nonce: the result, proved."""

    result: Any = None
    proof: str = Field(default="", description="HMAC-SHA256 (hex) keyed by the boot's agent token")
    token: str = Field(default="", description="the fingerprint of the token that keyed it")


class VerifyReply(Model):
    host: HostRef
    activity: str
    nonce: str
    reply: AgentReply


class ReplyVerdict(Model):
    ok: bool
    reason: str = Field(default="", description="why it was rejected; never the token")
    reboot: bool = Field(
        default=False, description="the boot's token is void or compromised: boot the host again"
    )


# ---- in-band agent ----
class CleanRequest(Model):
    mode: str = Field(description="metadata | disabled | erase")
    erase: EraseSpec | None = Field(default=None, description="mode erase: the methods (spec.erase).")
    software_raid: list[SoftwareRAIDVolume] | None = Field(
        default=None,
        description="spec.raid.softwareRAIDVolumes: metadata cleaning keeps arrays built as these ask "
        "and cleans what they hold; any other array is taken apart",
    )
    nonce: str = Field(default="", description=NONCE_DOC)


class CleanResult(Model):
    devices: list[str] = Field(default_factory=list)
    bytes_erased: int = 0
    erasure: list[DiskErasure] = Field(default_factory=list)


class SoftwareRAIDRequest(Model):
    """spec.raid.softwareRAIDVolumes: the md arrays the agent builds (activities/agent/softraid.py)."""

    volumes: list[SoftwareRAIDVolume] = Field(min_length=1, max_length=2)
    nonce: str = Field(default="", description=NONCE_DOC)


class SoftwareRAIDArray(Model):
    device: str = Field(description="/dev/mdN")
    level: str = Field(description="metal3's level: 0, 1 or 1+0")
    members: list[str] = Field(description="the holders' partitions, /dev/vda2 ...")
    size_bytes: int


class SoftwareRAIDResult(Model):
    arrays: list[SoftwareRAIDArray] = Field(default_factory=list)
    built: bool = Field(default=False, description="False: the arrays asked for were already there")


class WriteImageRequest(Model):
    image: ImageSpec
    root_device_hints: RootDeviceHints | None = None
    software_raid: list[SoftwareRAIDVolume] | None = Field(
        default=None,
        description="spec.raid.softwareRAIDVolumes: the image goes to the root volume's array, "
        "which is built first when it is missing",
    )
    compression: Literal["", "gzip"] = Field(
        default="", description="How the download is compressed (an OCI layer's media type); hashed as sent."
    )
    nonce: str = Field(default="", description=NONCE_DOC)


class WriteImageResult(Model):
    device: str
    bytes_written: int
    checksum: str
    checksum_type: str


class CustomDeployRequest(Model):
    """metal3's spec.customDeploy: run the named deploy method of the agent's registry
    (activities/agent/deploy_methods.py) instead of the default image write."""

    method: str
    image: ImageSpec | None = None
    root_device_hints: RootDeviceHints | None = None
    software_raid: list[SoftwareRAIDVolume] | None = None
    nonce: str = Field(default="", description=NONCE_DOC)


class WriteConfigDriveRequest(Model):
    device: str
    config_drive: ConfigDriveStaged
    nonce: str = Field(default="", description=NONCE_DOC)


# What crosses to and from the ramdisk. The agent holds no payload key, so these travel unsealed
# even when history is encrypted (metalflow.runtime.payload_codec): they must stay secret-free.
AGENT_WIRE_MODELS: tuple[type[Model], ...] = (
    HardwareDetails,
    InventoryRequest,
    AgentReply,
    CleanRequest,
    CleanResult,
    SoftwareRAIDRequest,
    SoftwareRAIDResult,
    WriteImageRequest,
    WriteImageResult,
    CustomDeployRequest,
    WriteConfigDriveRequest,
)
