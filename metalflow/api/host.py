"""Host workflow contracts: the workflow and step names, their inputs and results, status
publishing. Every payload here is secret-free: it carries `SecretRef`s, never values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from metalflow.api.erase import DiskErasure
from metalflow.api.firmware import FirmwareSchema, FirmwareSettingsStatus
from metalflow.api.firmware_components import FirmwareComponentsStatus
from metalflow.api.models import (
    HardwareDetails,
    HostRef,
    HostSpec,
    HostStatus,
    ImageSpec,
    JoinedNode,
    Model,
    SecretRef,
)

# ---- task queues ----
CONTROL_QUEUE = "metalflow"

STATUS_PUBLISH = "status.publish"
FIRMWARE_PUBLISH = "status.publish_firmware"
COMPONENTS_PUBLISH = "status.publish_firmware_components"


# ---- workflow payloads ----
HOST_WORKFLOW = "HostWorkflow"
REGISTER_HOST = "RegisterHost"
INSPECT_HOST = "InspectHost"
CLEAN_HOST = "CleanHost"
DEPLOY_HOST = "DeployHost"
JOIN_CLUSTER = "JoinCluster"
POWER_OFF_HOST = "PowerOffHost"
CONFIGURE_RAID = "ConfigureRAID"
APPLY_FIRMWARE_SETTINGS = "ApplyFirmwareSettings"
APPLY_FIRMWARE_UPDATES = "ApplyFirmwareUpdates"


class HostWorkflowInput(Model):
    """HostWorkflow's input, also what it carries across continue-as-new (no secrets in it)."""

    ref: HostRef
    spec: HostSpec
    status: HostStatus | None = None
    pending: list[str] = Field(default_factory=list, description="Operator requests not yet acted on.")
    step_seq: int = 0
    paused: bool = False
    detached: bool = False
    ramdisk_boot_timeout_seconds: int = 600
    history_event_limit: int = 2000
    power_check_interval_seconds: int = Field(
        default=300, ge=0, description="Read power this often while the host rests; 0: never."
    )
    power_sync: Literal["per-host", "batched"] = Field(
        default="per-host", description="Who reads it: the host on a timer, or its power sync shard."
    )
    power_seq: int = Field(default=0, ge=0, description="The last power sync reading heard (PowerWatch.seq).")
    baseline: bool = Field(default=False, description="The run before took workflows.patches.BASELINE.")


class StepInput(Model):
    """What every step workflow gets: the host, its spec at the time, and what is known so far."""

    ref: HostRef
    spec: HostSpec
    hardware: HardwareDetails | None = None
    powered_on: bool = False
    ramdisk_boot_timeout_seconds: int = 600
    purpose: str = ""
    join_token: SecretRef | None = None
    system_uuid: str = ""  # SMBIOS UUID registration recorded (canonical); boots a MAC-less host
    node: JoinedNode | None = None  # deprovisioning a joined host drains and deletes this Node first
    baseline: bool = False  # the parent took workflows.patches.BASELINE: so does the step, without a marker


class StepResult(Model):
    powered_on: bool
    hardware: HardwareDetails | None = None
    credentials_version: str = ""
    bmc_driver: str = ""  # registration: the driver the BMC address picked (BMCValidation.driver_label)
    image: ImageSpec | None = None
    image_digest: str = ""  # an oci:// image: the pinned manifest it resolved to
    root_device: str = ""
    bytes_written: int = 0
    join_token: SecretRef | None = None
    system_uuid: str = ""  # registration: the SMBIOS UUID the BMC reported (canonical text)
    erasure: list[DiskErasure] = Field(default_factory=list)  # cleaning with spec.erase: per disk
    node: JoinedNode | None = None  # JoinCluster: the Node the host joined as
    firmware_settings: FirmwareSettingsStatus | None = None  # ApplyFirmwareSettings: what the BIOS reports
    firmware_components: FirmwareComponentsStatus | None = None  # ApplyFirmwareUpdates: versions now


# ---- status ----
class FirmwareReport(Model):
    """What a BIOS read found, for the host's HostFirmwareSettings status and FirmwareSchema."""

    host: HostRef
    schema_: FirmwareSchema = Field(alias="schema")
    settings: dict[str, str] = Field(default_factory=dict, description="What the BMC reports.")
    desired: dict[str, str] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list, description="How the desired settings break it.")


class ComponentsReport(Model):
    """What a firmware update step found, for the host's HostFirmwareComponents status."""

    host: HostRef
    status: FirmwareComponentsStatus


class StatusUpdate(Model):
    host: HostRef
    status: HostStatus
    workflow_id: str = ""
    run_id: str = ""
