"""The shared data contract: metal3-compatible host spec and status as pydantic models.

Field names follow metal3's BareMetalHost (camelCase on the wire, snake_case in Python) so a
metal3 manifest round-trips through these models unchanged. Secrets are never fields here:
only `SecretRef`s, which activities resolve at call time.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import AliasChoices, ConfigDict, Field, field_validator, model_validator

from metalflow.api.erase import DiskErasure, EraseSpec
from metalflow.api.firmware import FirmwareSettingsStatus, desired_values
from metalflow.api.firmware_components import FirmwareComponentsStatus, FirmwareUpdate
from metalflow.api.metal3_fields import CustomDeploy as CustomDeploy
from metalflow.api.metal3_fields import HardwareRAIDVolume as HardwareRAIDVolume
from metalflow.api.metal3_fields import InspectionMode as InspectionMode
from metalflow.api.metal3_fields import NetworkInterface as NetworkInterface
from metalflow.api.metal3_fields import RAIDConfig as RAIDConfig
from metalflow.api.metal3_fields import RootDeviceHints as RootDeviceHints
from metalflow.api.metal3_fields import SoftwareRAIDVolume as SoftwareRAIDVolume
from metalflow.api.metal3_fields import Taint as Taint
from metalflow.api.model_base import Model as Model
from metalflow.api.oci_ref import parse_oci_url
from metalflow.api.security import SecurityEvent

_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class SecretRef(Model):
    """Where a secret lives: a Kubernetes Secret (name/namespace) or, for scripts, a local file.

    A file is YAML or JSON mapping keys to values (like a Secret's stringData). Workflows carry
    this reference only; activities resolve it when they need the value.
    """

    name: str = Field(min_length=1, max_length=253)
    namespace: str = "default"
    path: str | None = Field(
        default=None, description="Local file holding the keys; when unset, a Kubernetes Secret."
    )

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        if not _DNS_SUBDOMAIN.match(v):
            raise ValueError(
                f"secret name {v!r} is not a valid Kubernetes name (lower-case letters, digits, '-' and '.')"
            )
        return v

    def describe(self) -> str:
        return f"file {self.path}" if self.path else f"Secret {self.namespace}/{self.name}"


class BMCDetails(Model):
    """How to reach the host's BMC. `address` uses metal3's schemes (ipmi://, redfish://, ...)."""

    address: str = Field(min_length=1)
    credentials: SecretRef = Field(
        validation_alias=AliasChoices("credentials", "credentialsRef"),
        description="Secret with keys `username` and `password`.",
    )
    disable_certificate_verification: bool = False


class ChecksumType(StrEnum):
    MD5 = "md5"
    SHA256 = "sha256"
    SHA512 = "sha512"
    AUTO = "auto"


class ImageFormat(StrEnum):
    """metal3's image formats (CRD enum raw;qcow2;vdi;vmdk;live-iso)."""

    RAW = "raw"
    QCOW2 = "qcow2"
    VDI = "vdi"
    VMDK = "vmdk"
    LIVE_ISO = "live-iso"


class ImageSpec(Model):
    """The image to write: metal3's spec.image. `checksum` is a value or a URL to a checksum file.

    An `oci://` image's checksum is its layer's digest, from the registry; `ociAuth` is the
    registry credentials Secret (a kubernetes.io/dockerconfigjson, metal3's
    `image.ociAuthSecretName`)."""

    url: str = Field(min_length=1)
    checksum: str | None = None
    checksum_type: ChecksumType = ChecksumType.AUTO
    format: ImageFormat | None = None
    oci_auth: SecretRef | None = None

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str) -> str:
        if v.startswith("oci://"):
            parse_oci_url(v)
            return v
        if not re.match(r"^(https?|file)://\S+$", v):
            raise ValueError(f"image.url {v!r} must be an http://, https://, file:// or oci:// URL")
        return v

    @model_validator(mode="after")
    def _checksum_needed(self) -> ImageSpec:
        if self.url.startswith("oci://"):
            if self.checksum or self.format == ImageFormat.LIVE_ISO:
                raise ValueError(
                    "an oci:// image takes its checksum from the registry (the layer digest) and its "
                    "format from the disktype annotation or its bytes: remove image.checksum (pin a "
                    "digest in the URL with @sha256:...) and a live-iso format"
                )
            return self
        if self.oci_auth is not None:
            raise ValueError(
                "image.ociAuthSecretName is for oci:// images only; remove it or use an oci:// URL"
            )
        if self.format != ImageFormat.LIVE_ISO and not self.checksum:
            raise ValueError(
                "image.checksum is required (a hex digest or a URL to a checksum file) "
                "unless image.format is live-iso"
            )
        if self.checksum and not self.checksum.startswith(("http://", "https://", "file://")):
            digest_lengths = {
                ChecksumType.MD5: 32,
                ChecksumType.SHA256: 64,
                ChecksumType.SHA512: 128,
            }
            want = digest_lengths.get(self.checksum_type)
            if not re.fullmatch(r"[0-9a-fA-F]+", self.checksum):
                raise ValueError("image.checksum must be a hex digest or an http(s):// URL")
            if want and len(self.checksum) != want:
                raise ValueError(
                    f"image.checksum has {len(self.checksum)} hex digits but checksumType "
                    f"{self.checksum_type.value} needs {want}"
                )
            if self.checksum_type == ChecksumType.AUTO and len(self.checksum) not in (32, 64, 128):
                raise ValueError("image.checksum length matches no supported digest (md5, sha256, sha512)")
        return self


class CleaningMode(StrEnum):
    METADATA = "metadata"
    DISABLED = "disabled"


class BootMode(StrEnum):
    UEFI = "UEFI"
    UEFI_SECURE_BOOT = "UEFISecureBoot"
    LEGACY = "legacy"


class ConsumerRef(Model):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    api_version: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None


class JoinSpec(Model):
    """metalflow's addition: the cluster a provisioned host joins with kubeadm."""

    kubeconfig: SecretRef = Field(description="Secret with key `kubeconfig` for the target cluster.")
    control_plane: bool = False
    node_labels: dict[str, str] = Field(default_factory=dict)
    kubernetes_version: str | None = None
    timeout_seconds: int = Field(default=1800, gt=0)
    drain_timeout_seconds: int = Field(
        default=900,
        gt=0,
        description="Deprovisioning: how long to wait for the Node's pods to be evicted before failing.",
    )


class JoinedNode(Model):
    """metalflow: the Node a host joined as, and the cluster it is in (a reference: the Secret
    with the kubeconfig), so deprovisioning can drain and delete it whatever the spec says then."""

    name: str
    provider_id: str = Field(alias="providerID")
    kubeconfig: SecretRef


class UpdatePolicyMode(StrEnum):
    """metal3's HostUpdatePolicy modes: when a change to a provisioned host's firmware is applied."""

    ON_PREPARING = "onPreparing"  # only when the host is next prepared (the default)
    ON_REBOOT = "onReboot"  # at the next reboot the operator asks for: servicing


class HostUpdatePolicy(Model):
    """metal3's HostUpdatePolicy spec (the object of the host's name)."""

    firmware_settings: UpdatePolicyMode | None = None
    firmware_updates: UpdatePolicyMode | None = None


class HostSpec(Model):
    """What the operator wants of one host (metal3 BareMetalHost.spec, plus `join`)."""

    bmc: BMCDetails
    boot_mac_address: str | None = Field(default=None, alias="bootMACAddress")
    boot_mode: BootMode = BootMode.UEFI
    online: bool = True
    image: ImageSpec | None = None
    user_data: SecretRef | None = None
    network_data: SecretRef | None = None
    meta_data: SecretRef | None = None
    root_device_hints: RootDeviceHints | None = None
    automated_cleaning_mode: CleaningMode = CleaningMode.METADATA
    externally_provisioned: bool = False
    consumer_ref: ConsumerRef | None = None
    description: str | None = None
    # metal3 fields kept as written (issue 16); see metalflow/api/validation.py for their rules.
    raid: RAIDConfig | None = None
    hardware_profile: str | None = Field(default=None, description="Informational, as in metal3.")
    preprovisioning_network_data_name: str | None = None
    custom_deploy: CustomDeploy | None = None
    architecture: str | None = None
    taints: list[Taint] = Field(default_factory=list)
    disable_power_off: bool = False
    inspection_mode: InspectionMode | None = None
    network_interfaces: list[NetworkInterface] = Field(default_factory=list)
    join: JoinSpec | None = None
    erase: EraseSpec | None = Field(default=None, description="metalflow: verified erase when cleaning.")
    labels: dict[str, str] = Field(default_factory=dict)
    firmware_settings: dict[str, str] = Field(
        default_factory=dict,
        description="metalflow: the desired BIOS settings, the spec.settings of the HostFirmwareSettings "
        "of the host's name (the bridge and host files fill it); applied while preparing.",
    )

    firmware_updates: list[FirmwareUpdate] = Field(
        default_factory=list,
        description="metalflow: the spec.updates of the HostFirmwareComponents of the host's name; "
        "applied while preparing (before the settings).",
    )
    update_policy: HostUpdatePolicy | None = Field(
        default=None,
        description="metalflow: the spec of the HostUpdatePolicy of the host's name (onReboot: servicing).",
    )

    @field_validator("firmware_settings", mode="before")
    @classmethod
    def _settings_as_text(cls, v: object) -> object:
        """IntOrString (and YAML booleans) as text, as metal3 compares them."""
        return desired_values(v) if isinstance(v, dict) else ({} if v is None else v)

    @field_validator("taints", "network_interfaces", "firmware_updates", mode="before")
    @classmethod
    def _null_is_empty(cls, v: object) -> object:
        """null for an empty list, as Go's JSON (the temporal CLI, kubectl) writes it."""
        return [] if v is None else v

    @property
    def inspection_disabled(self) -> bool:
        return self.inspection_mode == InspectionMode.DISABLED

    @field_validator("boot_mac_address")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is None:
            return v
        norm = v.strip().lower().replace("-", ":")
        if not _MAC.match(norm):
            raise ValueError(f"bootMACAddress {v!r} is not a MAC address; write it as 00:11:22:33:44:55")
        return norm


class HostRef(Model):
    """A host's identity: the same namespace/name as its BareMetalHost."""

    namespace: str = "default"
    name: str

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 63:
            raise ValueError(f"namespace {v!r} must be a DNS label (lower-case, digits, '-')")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _DNS_SUBDOMAIN.match(v) or len(v) > 253:
            raise ValueError(
                f"host name {v!r} must be a Kubernetes name (lower-case letters, digits, '-', '.')"
            )
        return v

    @property
    def workflow_id(self) -> str:
        return f"host/{self.namespace}/{self.name}"

    @property
    def host_id(self) -> str:
        """Namespaces hold no dots, so `<ns>.<name>` is unambiguous."""
        return f"{self.namespace}.{self.name}"

    @property
    def agent_task_queue(self) -> str:
        return f"host-{self.host_id}"

    @classmethod
    def from_workflow_id(cls, workflow_id: str) -> HostRef:
        prefix, ns, name = workflow_id.split("/", 2)
        if prefix != "host":
            raise ValueError(f"{workflow_id!r} is not a host workflow id (host/<ns>/<name>)")
        return cls(namespace=ns, name=name)


class Host(Model):
    """A host as a script names it: identity plus spec (a BareMetalHost without the API)."""

    ref: HostRef
    spec: HostSpec


# ---- hardware (metal3 status.hardware) ----


class CPU(Model):
    arch: str = ""
    model: str = ""
    clock_megahertz: float = 0
    flags: list[str] = Field(default_factory=list)
    count: int = 0


class NIC(Model):
    name: str = ""
    model: str = ""
    mac: str = ""
    ip: str = ""
    speed_gbps: int = 0
    vlan_id: int = 0
    pxe: bool = False


class Storage(Model):
    name: str = ""
    alternate_names: list[str] = Field(default_factory=list)
    rotational: bool = False
    type: Literal["HDD", "SSD", "NVME", ""] = ""
    size_bytes: int = Field(default=0, ge=0)
    vendor: str = ""
    model: str = ""
    serial_number: str = ""
    wwn: str = ""
    wwn_vendor_extension: str = ""
    wwn_with_extension: str = ""
    hctl: str = ""


class HardwareSystemVendor(Model):
    manufacturer: str = ""
    product_name: str = ""
    serial_number: str = ""


class BIOS(Model):
    date: str = ""
    vendor: str = ""
    version: str = ""


class Firmware(Model):
    bios: BIOS = Field(default_factory=BIOS)


class HardwareDetails(Model):
    system_vendor: HardwareSystemVendor = Field(default_factory=HardwareSystemVendor)
    firmware: Firmware = Field(default_factory=Firmware)
    ram_mebibytes: int = 0
    nics: list[NIC] = Field(default_factory=list)
    storage: list[Storage] = Field(default_factory=list)
    cpu: CPU = Field(default_factory=CPU)
    hostname: str = ""


# ---- status (metal3 status) ----


class ProvisioningState(StrEnum):
    """metal3's provisioning states (status.provisioning.state)."""

    NONE = ""
    UNMANAGED = "unmanaged"
    REGISTERING = "registering"
    INSPECTING = "inspecting"
    PREPARING = "preparing"
    AVAILABLE = "available"
    PROVISIONING = "provisioning"
    PROVISIONED = "provisioned"
    DEPROVISIONING = "deprovisioning"
    EXTERNALLY_PROVISIONED = "externally provisioned"
    SERVICING = "servicing"
    POWERING_OFF_BEFORE_DELETE = "powering off before delete"
    DELETING = "deleting"


class OperationalStatus(StrEnum):
    OK = "OK"
    DISCOVERED = "discovered"
    ERROR = "error"
    DELAYED = "delayed"
    DETACHED = "detached"


class ErrorType(StrEnum):
    """metal3's errorType values."""

    REGISTRATION = "registration error"
    INSPECTION = "inspection error"
    PREPARATION = "preparation error"
    PROVISIONING = "provisioning error"
    PROVISIONED_REGISTRATION = "provisioned registration error"
    POWER_MANAGEMENT = "power management error"
    DETACH = "detach error"
    SERVICING = "servicing error"


class CredentialsStatus(Model):
    credentials: SecretRef | None = None
    credentials_version: str = ""


class OperationMetric(Model):
    start: datetime | None = None
    end: datetime | None = None


class OperationHistory(Model):
    register_: OperationMetric = Field(default_factory=OperationMetric, alias="register")
    inspect: OperationMetric = Field(default_factory=OperationMetric)
    provision: OperationMetric = Field(default_factory=OperationMetric)
    deprovision: OperationMetric = Field(default_factory=OperationMetric)


class ProvisionStatus(Model):
    state: ProvisioningState = ProvisioningState.NONE
    id: str = Field(default="", alias="ID")
    image: ImageSpec | None = None
    image_digest: str = Field(
        default="",
        description="oci:// images: the manifest the URL resolved to, oci://REGISTRY/REPO@sha256:...",
    )
    root_device_hints: RootDeviceHints | None = None
    boot_mode: BootMode | None = None


class HostStatus(Model):
    """metal3 BareMetalHost.status, plus metalflow's live step and progress fields."""

    operational_status: OperationalStatus = OperationalStatus.OK
    error_type: ErrorType | None = None
    error_message: str = ""
    error_count: int = 0
    last_updated: datetime | None = None
    hardware: HardwareDetails | None = None
    powered_on: bool = False
    provisioning: ProvisionStatus = Field(default_factory=ProvisionStatus)
    good_credentials: CredentialsStatus = Field(default_factory=CredentialsStatus)
    tried_credentials: CredentialsStatus = Field(default_factory=CredentialsStatus)
    operation_history: OperationHistory = Field(default_factory=OperationHistory)
    provisioning_fail_count: int = Field(default=0, ge=0)
    last_attempted_image: ImageSpec | None = None
    # metalflow additions
    bmc_driver: str = Field(default="", description="The BMC driver registration picked: redfish/idrac.")
    system_uuid: str = Field(default="", description="SMBIOS system UUID the BMC reported at registration.")
    erasure: list[DiskErasure] = Field(
        default_factory=list, description="The last verified erase (spec.erase), one record per disk."
    )
    node: JoinedNode | None = Field(
        default=None, description="The Kubernetes Node this host joined as (spec.join), until deprovisioned."
    )
    firmware_settings: FirmwareSettingsStatus | None = Field(
        default=None, description="The BIOS settings the BMC last reported (HostFirmwareSettings status)."
    )
    firmware_components: FirmwareComponentsStatus | None = Field(
        default=None, description="Firmware versions and the updates applied (HostFirmwareComponents status)."
    )
    security_events: list[SecurityEvent] = Field(default_factory=list, description="Agent replies refused.")
    current_step: str = ""
    paused: bool = False
    detached: bool = False
    deleted: bool = False
