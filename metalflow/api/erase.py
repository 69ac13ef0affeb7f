"""Verified disk erase: metalflow's `spec.erase` and the per-disk record it leaves.

metal3 offers `automatedCleaningMode: metadata | disabled`: partition tables and signatures go,
the data stays. Operators retiring or re-tenanting a server ask for more. With `spec.erase`
(declared by metalflow's BareMetalHost CRD; metal3's CRD would prune it, so it needs
metalflow's), cleaning erases every disk with a method the disk supports, reads samples back to
verify, and records what it did per disk in `status.erasure`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from metalflow.api.model_base import Model


class EraseMethod(StrEnum):
    AUTO = "auto"  # the fastest method each disk supports among `allowedMethods`
    NVME_CRYPTO_ERASE = "nvmeCryptoErase"  # NVMe Format, secure erase setting 2: drops the key
    NVME_FORMAT = "nvmeFormat"  # NVMe Format, secure erase setting 1: user data erase
    ATA_SECURE_ERASE = "ataSecureErase"  # ATA SECURITY ERASE UNIT (SATA disks)
    OVERWRITE = "overwrite"  # write zeroes over every byte (any writable disk)


# Fastest first: what `auto` tries per disk.
BY_SPEED = (
    EraseMethod.NVME_CRYPTO_ERASE,
    EraseMethod.NVME_FORMAT,
    EraseMethod.ATA_SECURE_ERASE,
    EraseMethod.OVERWRITE,
)


class EraseSpec(Model):
    """spec.erase: which erase method cleaning uses (needs automatedCleaningMode metadata)."""

    method: EraseMethod = Field(
        default=EraseMethod.AUTO,
        description="One method for every disk (a disk without it fails the step before any disk "
        "is erased), or auto: the fastest method each disk supports among allowedMethods.",
    )
    allowed_methods: list[EraseMethod] = Field(
        default_factory=lambda: list(BY_SPEED), description="What auto may pick from."
    )
    verify_samples: int = Field(
        default=64, ge=1, le=4096, description="Blocks read back per disk after the erase (plus its ends)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> EraseSpec:
        if EraseMethod.AUTO in self.allowed_methods:
            raise ValueError("spec.erase.allowedMethods: list concrete methods; auto is not one")
        if not self.allowed_methods:
            raise ValueError(
                "spec.erase.allowedMethods is empty: list at least one of " + ", ".join(BY_SPEED)
            )
        if self.method != EraseMethod.AUTO and self.method not in self.allowed_methods:
            raise ValueError(
                f"spec.erase.method {self.method.value} is not in spec.erase.allowedMethods; "
                "add it there or use method auto"
            )
        return self

    def candidates(self) -> list[EraseMethod]:
        """The methods to consider for a disk, fastest first."""
        if self.method != EraseMethod.AUTO:
            return [self.method]
        return [m for m in BY_SPEED if m in self.allowed_methods]


class DiskErasure(Model):
    """What erase did to one disk: kept in status.erasure and in the step's history."""

    device: str
    serial: str = ""
    size_bytes: int = 0
    method: EraseMethod
    result: Literal["erased"] = "erased"
    verified: str = Field(description="How the read-back checked it: zeroes, or changed (crypto erase).")
    samples: int = Field(ge=0, description="Blocks read back.")
    seconds: float = 0.0
    finished_at: datetime | None = None
