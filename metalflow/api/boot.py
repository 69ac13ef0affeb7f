"""Boot contracts: preparing a host's network boot or virtual media for a purpose."""

from __future__ import annotations

from enum import StrEnum

from metalflow.api.models import (
    BootMode,
    HostRef,
    Model,
)

BOOT_PREPARE = "boot.prepare"
BOOT_CLEANUP = "boot.cleanup"


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
