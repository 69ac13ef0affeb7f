"""The BMC driver seam: one Protocol every driver meets, and a base class for what is not built.

Shaped after Ironic's composable hardware interfaces (power, management, boot, inspect, bios,
firmware, raid) and metal3's per-scheme access details: the BMC address picks a driver class
through the registry (registry.py), and the activities call only this Protocol. A vendor's
quirk is a subclass of its protocol's driver; an operation nobody has built yet fails with a
typed, non-retryable error that names the driver and what is missing, never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, Protocol

from metalflow.api.bmc import BootDevice, PowerAction, PowerResult
from metalflow.api.bmc_address import BMCAddress
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.firmware import BIOSState
from metalflow.api.firmware_components import FirmwareTaskState
from metalflow.api.models import BootMode, HardwareDetails
from metalflow.api.smbios import InvalidSystemUUID, canonical, is_nil


class Credentials:
    """Username/password held only in memory for the call; never repr'd."""

    def __init__(self, username: str, password: str, version: str, secret: str) -> None:
        self.username, self.password, self.version, self.secret = username, password, version, secret

    def __repr__(self) -> str:
        return f"Credentials(user={self.username!r}, secret={self.secret})"


@dataclass(frozen=True)
class SystemCheck:
    """What registration learns: the credentials worked, the system exists, its power."""

    powered_on: bool
    system_id: str = ""  # the Redfish system resource path; IPMI has none
    system_uuid: str = ""  # SMBIOS system UUID, canonical text (metalflow.api.smbios); "" if none


def reported_uuid(text: str | None) -> str:
    """A BMC's system UUID as canonical text; "" when absent, malformed or a nil placeholder
    (all zeros / all ones), which identify no machine and must never be matched."""
    if not text:
        return ""
    try:
        value = canonical(text)
    except InvalidSystemUUID:
        return ""
    return "" if is_nil(value) else value


class BMCDriver(Protocol):
    """What the BMC activities need of a BMC, whatever its protocol or vendor."""

    protocol: ClassVar[str]
    vendor: ClassVar[str]
    addr: BMCAddress
    creds: Credentials

    def __init__(self, addr: BMCAddress, creds: Credentials) -> None: ...

    @property
    def name(self) -> str: ...

    def validate(self) -> SystemCheck:
        """Log in and find the system; fails typed (auth, not found, unreachable)."""
        ...

    def power(self, action: PowerAction, wait_seconds: int) -> PowerResult:
        """Apply `action` and wait up to `wait_seconds` for the BMC to report it; idempotent."""
        ...

    def set_boot_device(self, device: BootDevice, persistent: bool, mode: BootMode | None) -> bool:
        """Set the boot override (and boot mode); False when it already was so."""
        ...

    def insert_media(self, image_url: str) -> None: ...

    def eject_media(self) -> None: ...

    def inventory(self) -> HardwareDetails:
        """What the BMC knows without booting the host (out-of-band inspection)."""
        ...

    def read_bios(self) -> BIOSState:
        """Current and pending BIOS settings and the registry's schema (no password values)."""
        ...

    def apply_bios_settings(self, settings: Mapping[str, str | int | bool]) -> None:
        """Write settings to the pending set; the BIOS applies them at the next boot."""
        ...

    def firmware_versions(self) -> dict[str, str]:
        """The running version of each component the driver can update (bios, bmc)."""
        ...

    def firmware_tasks(self, component: str, image_url: str) -> list[str]:
        """The URIs of the BMC's Tasks updating `component` from `image_url`."""
        ...

    def start_firmware_update(self, component: str, image_url: str, known: list[str]) -> str:
        """Start one update; the URI of its Task (a Task not in `known` is this request's)."""
        ...

    def firmware_task(self, uri: str) -> FirmwareTaskState:
        """Where the update Task is now."""
        ...

    def configure_raid(self, volumes: Sequence[Mapping[str, Any]]) -> None: ...


class BaseDriver:
    """Address and credentials, plus typed refusals for what a driver does not (yet) do.

    Subclasses implement validate, power, set_boot_device and inventory; they override the
    media, BIOS, firmware and RAID methods only once they really support them.
    """

    protocol: ClassVar[str] = ""
    vendor: ClassVar[str] = ""

    def __init__(self, addr: BMCAddress, creds: Credentials) -> None:
        self.addr, self.creds = addr, creds

    @property
    def name(self) -> str:
        """`redfish`, `ipmi`, or `redfish/idrac` for a vendor's driver: what status shows."""
        return f"{self.protocol}/{self.vendor}" if self.vendor else self.protocol

    def unsupported(self, what: str, instead: str) -> NoReturn:
        raise permanent(
            ErrorName.BMC_UNSUPPORTED,
            f"the {self.name} BMC driver ({self.addr.scheme}://) has no {what}; {instead}",
        )

    def insert_media(self, image_url: str) -> None:
        self.unsupported("virtual media", "use a redfish-virtualmedia:// address or network boot")

    def eject_media(self) -> None:
        self.unsupported("virtual media", "use a redfish-virtualmedia:// address or network boot")

    def read_bios(self) -> BIOSState:
        self.unsupported("BIOS settings", "remove the HostFirmwareSettings' settings or use a Redfish BMC")

    def apply_bios_settings(self, settings: Mapping[str, str | int | bool]) -> None:
        self.unsupported("BIOS settings", "remove the HostFirmwareSettings' settings or use a Redfish BMC")

    def firmware_versions(self) -> dict[str, str]:
        self.unsupported(
            "firmware updates", "remove the HostFirmwareComponents' updates or use a Redfish BMC"
        )

    def firmware_tasks(self, component: str, image_url: str) -> list[str]:
        self.unsupported(
            "firmware updates", "remove the HostFirmwareComponents' updates or use a Redfish BMC"
        )

    def start_firmware_update(self, component: str, image_url: str, known: list[str]) -> str:
        self.unsupported(
            "firmware updates", "remove the HostFirmwareComponents' updates or use a Redfish BMC"
        )

    def firmware_task(self, uri: str) -> FirmwareTaskState:
        self.unsupported(
            "firmware updates", "remove the HostFirmwareComponents' updates or use a Redfish BMC"
        )

    def configure_raid(self, volumes: Sequence[Mapping[str, Any]]) -> None:
        # metal3's wording for a BMC without RAID support; preparing fails with it in status
        raise permanent(
            ErrorName.BMC_UNSUPPORTED,
            f"RAID configuration is not supported by the {self.name} driver "
            f"({self.addr.scheme}://); remove spec.raid or use a BMC whose driver builds RAID volumes",
        )
