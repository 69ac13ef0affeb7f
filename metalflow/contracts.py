"""Activity contracts: the names workflows call and the typed payloads they exchange.

Workflows call activities by these names only (`workflow.execute_activity(BMC_POWER, ...)`),
so the workflow code never imports a BMC library and the implementations can move between
workers. Every payload here is secret-free: it carries `SecretRef`s, never values.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from metalflow.claims import ClaimSpec
from metalflow.models import (
    BootMode,
    ConsumerRef,
    HardwareDetails,
    HostRef,
    HostSpec,
    HostStatus,
    ImageSpec,
    JoinSpec,
    Model,
    RootDeviceHints,
    SecretRef,
)

# ---- task queues ----
CONTROL_QUEUE = "metalflow"

# ---- activity names (control plane, CONTROL_QUEUE) ----
BMC_VALIDATE = "bmc.validate"
BMC_POWER = "bmc.power"
BMC_SET_BOOT_DEVICE = "bmc.set_boot_device"
BMC_INVENTORY = "bmc.inventory"
BMC_INSERT_MEDIA = "bmc.insert_media"
BMC_EJECT_MEDIA = "bmc.eject_media"
BOOT_PREPARE = "boot.prepare"
BOOT_CLEANUP = "boot.cleanup"
CONFIGDRIVE_STAGE = "configdrive.stage"
STATUS_PUBLISH = "status.publish"
KUBEADM_PREPARE_JOIN = "kubeadm.prepare_join"
KUBEADM_WAIT_NODE = "kubeadm.wait_node"
KUBEADM_CLEANUP = "kubeadm.cleanup"

# ---- activity names (in-band, on the host's own queue `host-<id>`) ----
AGENT_INVENTORY = "agent.inventory"
AGENT_CLEAN = "agent.clean"
AGENT_WRITE_IMAGE = "agent.write_image"
AGENT_WRITE_CONFIGDRIVE = "agent.write_configdrive"


# ---- error type names carried by non-retryable ApplicationErrors ----
class ErrorName(StrEnum):
    BMC_ADDRESS = "BMCAddressError"
    BMC_AUTH = "BMCAuthError"
    BMC_UNSUPPORTED = "BMCUnsupportedError"
    BMC_NOT_FOUND = "BMCSystemNotFound"
    SECRET_MISSING = "SecretNotFound"
    SECRET_INVALID = "SecretInvalid"
    IMAGE_CHECKSUM = "ImageChecksumMismatch"
    IMAGE_UNAVAILABLE = "ImageUnavailable"
    IMAGE_FORMAT = "ImageFormatError"
    NO_ROOT_DEVICE = "NoRootDeviceMatch"
    CLUSTER_INFO_MISSING = "ClusterInfoMissing"
    NODE_NOT_READY = "NodeNotReady"
    RAMDISK_TIMEOUT = "RamdiskNeverBooted"
    INVALID_SPEC = "InvalidSpec"


# ---- BMC ----
class BMCTarget(Model):
    """Everything a BMC activity needs to reach one BMC; the password stays behind the ref."""

    address: str
    credentials: SecretRef
    disable_certificate_verification: bool = False
    boot_mac_address: str | None = None


class BMCValidation(Model):
    powered_on: bool
    credentials_version: str = Field(
        default="", description="Version of the secret that worked (resourceVersion or file mtime)."
    )
    driver: str = ""
    system_id: str = ""


class PowerAction(StrEnum):
    ON = "on"
    OFF = "off"
    SOFT_OFF = "soft_off"
    REBOOT = "reboot"


class PowerRequest(Model):
    target: BMCTarget
    action: PowerAction
    wait_seconds: int = Field(default=120, gt=0, description="How long to wait for the new state.")


class PowerResult(Model):
    powered_on: bool
    changed: bool


class BootDevice(StrEnum):
    PXE = "pxe"
    DISK = "disk"
    CD = "cd"
    UEFI_HTTP = "uefi_http"


class BootDeviceRequest(Model):
    target: BMCTarget
    device: BootDevice
    persistent: bool = False
    boot_mode: BootMode | None = None


class MediaRequest(Model):
    target: BMCTarget
    image_url: str = ""


# ---- network boot ----
class BootPurpose(StrEnum):
    INSPECT = "inspect"
    CLEAN = "clean"
    DEPLOY = "deploy"


class BootPrepareRequest(Model):
    host: HostRef
    boot_mac_address: str | None
    purpose: BootPurpose
    boot_mode: BootMode = BootMode.UEFI
    virtual_media: bool = False


class BootPrepareResult(Model):
    ipxe_script_url: str = ""
    iso_url: str = ""
    dhcp_entry_written: bool = False


# ---- in-band agent ----
class CleanRequest(Model):
    mode: str = Field(description="metadata | disabled | erase")


class CleanResult(Model):
    devices: list[str] = Field(default_factory=list)
    bytes_erased: int = 0


class WriteImageRequest(Model):
    image: ImageSpec
    root_device_hints: RootDeviceHints | None = None


class WriteImageResult(Model):
    device: str
    bytes_written: int
    checksum: str
    checksum_type: str


class ConfigDriveRequest(Model):
    host: HostRef
    user_data: SecretRef | None = None
    network_data: SecretRef | None = None
    meta_data: SecretRef | None = None


class ConfigDriveStaged(Model):
    """Where the agent fetches the built config drive; the URL carries no secret content."""

    url: str
    sha256: str
    size_bytes: int


class WriteConfigDriveRequest(Model):
    device: str
    config_drive: ConfigDriveStaged


# ---- status ----
class StatusUpdate(Model):
    host: HostRef
    status: HostStatus
    workflow_id: str = ""
    run_id: str = ""


# ---- hardware is shared by BMC (out-of-band) and agent (in-band) inventory ----
InventoryResult = HardwareDetails


# ---- workflow payloads ----
HOST_WORKFLOW = "HostWorkflow"
REGISTER_HOST = "RegisterHost"
INSPECT_HOST = "InspectHost"
CLEAN_HOST = "CleanHost"
DEPLOY_HOST = "DeployHost"
JOIN_CLUSTER = "JoinCluster"
POWER_OFF_HOST = "PowerOffHost"


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


class StepInput(Model):
    """What every step workflow gets: the host, its spec at the time, and what is known so far."""

    ref: HostRef
    spec: HostSpec
    hardware: HardwareDetails | None = None
    powered_on: bool = False
    ramdisk_boot_timeout_seconds: int = 600
    purpose: str = ""
    join_token: SecretRef | None = None


class StepResult(Model):
    powered_on: bool
    hardware: HardwareDetails | None = None
    credentials_version: str = ""
    image: ImageSpec | None = None
    root_device: str = ""
    bytes_written: int = 0
    join_token: SecretRef | None = None


# ---- kubeadm join ----
class JoinRequest(Model):
    host: HostRef
    join: JoinSpec
    user_data: SecretRef | None = None


class JoinPlan(Model):
    """References only: the token lives in its Secret, the merged user-data in another."""

    token_secret: SecretRef
    user_data: SecretRef
    ca_cert_hash: str
    api_server_endpoint: str


class WaitNodeRequest(Model):
    host: HostRef
    join: JoinSpec
    token_secret: SecretRef | None = None


class NodeInfo(Model):
    name: str
    ready: bool
    provider_id: str


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
