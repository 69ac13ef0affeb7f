"""Firmware updates: metal3's HostFirmwareComponents, as data.

`spec.updates` names a component (`bios`, `bmc`) and the URL of its image; the BMC applies it
with Redfish `UpdateService.SimpleUpdate` as a Task, which metalflow follows to its end. Status
keeps, per component, the version found first, the current one and the last one flashed.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import Field, field_validator

from metalflow.api.model_base import Model

# metal3's rule for spec.updates[].component (its CRD's pattern)
COMPONENT = re.compile(r"^(bmc|bios|nic:\S+)$")
BUILT_COMPONENTS = ("bios", "bmc")  # what the Redfish driver targets (a NIC needs its own path)


class FirmwareUpdate(Model):
    """One entry of metal3's HostFirmwareComponents spec.updates."""

    component: str
    url: str

    @field_validator("component")
    @classmethod
    def _component(cls, v: str) -> str:
        if not COMPONENT.match(v):
            raise ValueError(f"component {v!r} must be bios, bmc or nic:<id>, as metal3 names them")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://\S+$", v):
            raise ValueError(f"url {v!r} must be an http(s) URL the BMC can fetch the image from")
        return v


class FirmwareComponentStatus(Model):
    """metal3's HostFirmwareComponents status.components entry."""

    component: str
    initial_version: str = ""
    current_version: str = ""
    last_version_flashed: str = ""
    updated_at: datetime | None = None


class FirmwareComponentsStatus(Model):
    """metal3's HostFirmwareComponents status, as the host's status carries it."""

    updates: list[FirmwareUpdate] = Field(default_factory=list, description="The updates last applied.")
    components: list[FirmwareComponentStatus] = Field(default_factory=list)
    last_updated: datetime | None = None


class FirmwareTaskState(Model):
    """Where a BMC's update Task is: Redfish TaskState, and its messages when it ended badly."""

    uri: str
    state: str = ""
    messages: list[str] = Field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.state in ("Completed", "Exception", "Killed", "Cancelled", "Interrupted")

    @property
    def ok(self) -> bool:
        return self.state == "Completed"


def merged_components(
    before: FirmwareComponentsStatus | None, now: FirmwareComponentsStatus
) -> FirmwareComponentsStatus:
    """`now`, each component keeping the initial version first recorded for it (metal3's
    initialVersion) and its last flash when this run flashed nothing new."""
    old = {c.component: c for c in (before.components if before else [])}
    components = []
    for c in now.components:
        prior = old.get(c.component)
        if prior is not None:
            c = c.model_copy(
                update={
                    "initial_version": prior.initial_version or c.initial_version,
                    "last_version_flashed": c.last_version_flashed or prior.last_version_flashed,
                    "updated_at": c.updated_at or prior.updated_at,
                }
            )
        components.append(c)
    return now.model_copy(update={"components": components})
