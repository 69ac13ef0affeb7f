"""Boot contracts: preparing a host's network boot or virtual media for a purpose."""

from __future__ import annotations

from enum import StrEnum

from pydantic import model_validator

from metalflow.api.bmc_address import BootMethod
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
    virtual_media: bool = False  # how requests said it before boot_method; no longer sent
    boot_method: BootMethod = BootMethod.PXE

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
