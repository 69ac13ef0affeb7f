"""BMC contracts: the activity names workflows call and their secret-free payloads.

The password stays behind `BMCTarget.credentials`; drivers resolve it inside the activity.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from metalflow.api.models import (
    BootMode,
    Model,
    RAIDConfig,
    SecretRef,
)

BMC_VALIDATE = "bmc.validate"
BMC_POWER = "bmc.power"
BMC_SET_BOOT_DEVICE = "bmc.set_boot_device"
BMC_INSERT_MEDIA = "bmc.insert_media"
BMC_EJECT_MEDIA = "bmc.eject_media"
BMC_CONFIGURE_RAID = "bmc.configure_raid"
BMC_INVENTORY = "bmc.inventory"
BMC_READ_BIOS = "bmc.read_bios"
BMC_APPLY_BIOS = "bmc.apply_bios"
BMC_FIRMWARE_VERSIONS = "bmc.firmware_versions"
BMC_FIRMWARE_TASKS = "bmc.firmware_tasks"
BMC_START_FIRMWARE_UPDATE = "bmc.start_firmware_update"
BMC_WAIT_FIRMWARE_TASK = "bmc.wait_firmware_task"


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
    driver: str = Field(default="", description="The protocol the driver speaks: redfish or ipmi.")
    system_id: str = ""
    vendor: str = Field(default="", description="The vendor driver picked by the address (idrac, ilo5).")
    system_uuid: str = Field(
        default="", description="SMBIOS system UUID (canonical text) the BMC reports; '' when it has none."
    )

    @property
    def driver_label(self) -> str:
        """What the operator sees in status: `redfish`, `ipmi`, or `redfish/idrac` for a vendor's."""
        return f"{self.driver}/{self.vendor}" if self.vendor else self.driver


class PowerAction(StrEnum):
    ON = "on"
    OFF = "off"
    SOFT_OFF = "soft_off"
    REBOOT = "reboot"


class BootDevice(StrEnum):
    PXE = "pxe"
    DISK = "disk"
    CD = "cd"
    UEFI_HTTP = "uefi_http"


class BootSetting(Model):
    """The device the next boot uses, set in the same BMC call as the power action that boots it."""

    device: BootDevice
    persistent: bool = False
    boot_mode: BootMode | None = None


class PowerRequest(Model):
    target: BMCTarget
    action: PowerAction
    wait_seconds: int = Field(default=120, gt=0, description="How long to wait for the new state.")
    boot: BootSetting | None = Field(
        default=None, description="Set this boot device first (one activity, one workflow task, not two)."
    )


class PowerResult(Model):
    powered_on: bool
    changed: bool


class BootDeviceRequest(Model):
    target: BMCTarget
    device: BootDevice
    persistent: bool = False
    boot_mode: BootMode | None = None


class MediaRequest(Model):
    target: BMCTarget
    image_url: str = ""


class RAIDRequest(Model):
    """Apply spec.raid through the host's BMC driver (metal3 does it while preparing)."""

    target: BMCTarget
    raid: RAIDConfig


class BIOSApplyRequest(Model):
    """Settings to write to the BIOS's pending set, already checked against its registry and
    typed as its JSON wants them (metalflow.api.firmware.typed_value); they apply at the next boot."""

    target: BMCTarget
    settings: dict[str, str | int | bool]


class BIOSReadRequest(Model):
    """Read the BIOS; with `expect`, wait up to `wait_seconds` until it reports those values
    and nothing pending (the settings written before a reboot, applied while it booted)."""

    target: BMCTarget
    expect: dict[str, str] = Field(default_factory=dict)
    wait_seconds: int = Field(default=0, ge=0)


class FirmwareVersions(Model):
    """The running firmware version of each component the driver can update (bios, bmc)."""

    versions: dict[str, str] = Field(default_factory=dict)


class FirmwareUpdateRequest(Model):
    """Start one SimpleUpdate. A Task the BMC has for the same image and target that is not
    among `known` (listed before any attempt: one whose answer was lost with its worker) is
    returned instead of posting again."""

    target: BMCTarget
    component: str
    url: str
    known: list[str] = Field(default_factory=list, description="URIs of the Tasks listed before.")


class FirmwareTasks(Model):
    """The URIs of the BMC's Tasks for one image and target."""

    uris: list[str] = Field(default_factory=list)


class FirmwareTaskRequest(Model):
    """Follow one update Task until it ends, for at most `wait_seconds`."""

    target: BMCTarget
    uri: str
    wait_seconds: int = Field(default=3600, gt=0)
