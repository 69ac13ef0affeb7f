"""Boot contracts: preparing a host's network boot or virtual media for a purpose."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import Field, model_validator

from metalflow.api.bmc_address import BootMethod
from metalflow.api.models import (
    BootMode,
    HardwareDetails,
    HostRef,
    Model,
)

BOOT_PREPARE = "boot.prepare"
BOOT_CLEANUP = "boot.cleanup"
BOOT_FORGET_UUID = "boot.forget_uuid"  # a deleted host's SMBIOS UUID claim (hosts without a MAC)


# ---- network boot ----
class BootPurpose(StrEnum):
    INSPECT = "inspect"
    CLEAN = "clean"
    DEPLOY = "deploy"


@dataclass(frozen=True)
class Architecture:
    """What booting one CPU architecture takes: its ramdisk files and iPXE binaries.

    metal3's spec.architecture (Ironic's cpu_arch) picks the row; unset means x86_64. The
    kernel and initrd of another architecture sit next to the x86_64 ones with `-<name>`
    appended. dnsmasq tags a client by the architecture its firmware reports (DHCP option 93,
    RFC 4578 / IANA "Processor Architecture Types") and sends it the matching iPXE binary; host
    entries carry no tags of their own (dnsmasq 2.89 crashes on SIGHUP with `set:` in them).
    """

    name: str
    suffix: str  # appended to the boot server's kernel and initrd names
    uefi_ipxe: str  # iPXE binary for UEFI firmware (TFTP)
    bios_ipxe: str | None  # iPXE binary for BIOS firmware; None where there is no BIOS
    client_archs: tuple[int, ...] = ()  # option 93 values of its UEFI firmware (PXE, HTTP boot)

    @property
    def dhcp_tag(self) -> str:
        return f"arch-{self.name}"


ARCHITECTURES: dict[str, Architecture] = {
    # snponly.efi (Ironic's default for UEFI): iPXE over the firmware's own NIC driver (SNP), so
    # any NIC the firmware can boot from works, and UEFI HTTP boot fetches the same binary
    "x86_64": Architecture("x86_64", "", "snponly.efi", "undionly.kpxe"),
    "aarch64": Architecture("aarch64", "-aarch64", "ipxe-arm64.efi", None, client_archs=(11, 19)),
}
_ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64"}


class UnknownArchitecture(ValueError):
    """spec.architecture names an architecture metalflow has no ramdisk for."""


def architecture(name: str | None) -> Architecture:
    key = _ARCH_ALIASES.get((name or "x86_64").lower(), (name or "x86_64").lower())
    if key not in ARCHITECTURES:
        raise UnknownArchitecture(
            f"spec.architecture {name!r}: no deploy ramdisk for it; known: {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[key]


def learnt_boot_mac(hardware: HardwareDetails | None) -> str | None:
    """The MAC of the NIC the host network-booted its inspection ramdisk from (the agent marks it
    `pxe` from the kernel's BOOTIF= argument, as Ironic's inspection does); None if none is."""
    booted = [nic.mac for nic in (hardware.nics if hardware else []) if nic.pxe and nic.mac]
    return booted[0].lower() if len(booted) == 1 else None


class BootPrepareRequest(Model):
    host: HostRef
    boot_mac_address: str | None
    purpose: BootPurpose
    boot_mode: BootMode = BootMode.UEFI
    virtual_media: bool = False  # how requests said it before boot_method; no longer sent
    boot_method: BootMethod = BootMethod.PXE
    architecture: str | None = None  # spec.architecture; None is x86_64
    preprovisioning_network_data_name: str | None = None  # the Secret's name only, never its data
    system_uuid: str = ""  # the SMBIOS UUID registration recorded: boots a host without a MAC

    @model_validator(mode="after")
    def _legacy_virtual_media(self) -> BootPrepareRequest:
        """A request recorded before boot_method existed said virtual media with the flag alone."""
        if self.virtual_media:
            self.boot_method = BootMethod.VIRTUAL_MEDIA
        return self


class BootPrepareResult(Model):
    """Workflows read iso_url only; the other two stay because recorded results carry them and
    Model forbids unknown keys, so dropping them would break replaying those histories."""

    ipxe_script_url: str = ""
    iso_url: str = ""
    dhcp_entry_written: bool = False
    agent_token: str = Field(
        default="",
        description="The fingerprint of this boot's agent token (activities/boot/agent_tokens.py); "
        "the token itself never enters history",
    )
