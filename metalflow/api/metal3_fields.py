"""metal3 BareMetalHost spec fields beyond the basics, kept as written (issue 16).

Field names, enums and limits follow metal3's CRD (baremetal-operator,
apis/metal3.io/v1alpha1/baremetalhost_types.go); the webhook's cross-field rules are in
metalflow/api/validation.py. Re-exported by metalflow.api.models.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AliasChoices, Field, field_validator

from metalflow.api.model_base import Model


class RootDeviceHints(Model):
    """metal3's rootDeviceHints: every hint given must match the chosen disk."""

    device_name: str | None = None
    hctl: str | None = None
    model: str | None = None
    vendor: str | None = None
    serial_number: str | None = None
    min_size_gigabytes: int | None = Field(default=None, ge=0)
    wwn: str | None = None
    wwn_with_extension: str | None = None
    wwn_vendor_extension: str | None = None
    rotational: bool | None = None


HardwareRAIDLevel = Literal["0", "1", "2", "5", "6", "1+0", "5+0", "6+0"]
SoftwareRAIDLevel = Literal["0", "1", "1+0"]


class HardwareRAIDVolume(Model):
    """metal3's hardwareRAIDVolumes[]: a volume the RAID controller builds."""

    size_gibibytes: int | None = Field(default=None, ge=0)
    level: HardwareRAIDLevel
    name: str | None = Field(default=None, max_length=64)
    rotational: bool | None = None
    number_of_physical_disks: int | None = Field(default=None, ge=1)
    controller: str | None = None
    physical_disks: list[str] = Field(default_factory=list)

    @field_validator("physical_disks", mode="before")
    @classmethod
    def _null_is_empty(cls, v: object) -> object:
        return [] if v is None else v  # Go's JSON writes an empty list as null


class SoftwareRAIDVolume(Model):
    """metal3's softwareRAIDVolumes[]: a Linux software RAID built at deploy."""

    size_gibibytes: int | None = Field(default=None, ge=0)
    level: SoftwareRAIDLevel
    physical_disks: list[RootDeviceHints] | None = Field(default=None, min_length=2)
    root_volume: bool = False


class RAIDConfig(Model):
    """metal3's spec.raid. Kept and applied while preparing; never dropped."""

    hardware_raid_volumes: list[HardwareRAIDVolume] | None = Field(
        default=None,
        validation_alias=AliasChoices("hardwareRAIDVolumes", "hardware_raid_volumes"),
        serialization_alias="hardwareRAIDVolumes",
    )
    software_raid_volumes: list[SoftwareRAIDVolume] | None = Field(
        default=None,
        max_length=2,
        validation_alias=AliasChoices("softwareRAIDVolumes", "software_raid_volumes"),
        serialization_alias="softwareRAIDVolumes",
    )

    @property
    def requested(self) -> bool:
        return bool(self.hardware_raid_volumes or self.software_raid_volumes)


class CustomDeploy(Model):
    """metal3's spec.customDeploy: a named deploy method instead of writing spec.image."""

    method: str = Field(min_length=1)


class Taint(Model):
    """A Kubernetes Node taint (core/v1 Taint), put on the Node at join."""

    key: str = Field(min_length=1)
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    time_added: str | None = None


class InspectionMode(StrEnum):
    """metal3's spec.inspectionMode (CRD enum disabled;agent;fast)."""

    DISABLED = "disabled"
    AGENT = "agent"
    FAST = "fast"


class NetworkAttachmentRef(Model):
    name: str = Field(min_length=1)
    namespace: str | None = None


class SwitchPort(Model):
    switch_id: str = Field(alias="switchID", pattern=r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
    port_id: str = Field(alias="portID")


class NetworkInterface(Model):
    """metal3's spec.networkInterfaces[]: a NIC picked by name or MAC (exactly one)."""

    name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9._-]+$")
    mac_address: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
    host_network_attachment: NetworkAttachmentRef | None = None
    switch_port: SwitchPort | None = None

    @property
    def key(self) -> str:
        return self.name or self.mac_address or ""
