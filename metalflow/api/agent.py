"""In-band agent contracts: what the deploy ramdisk does on the host's own task queue
(`host-<namespace>.<name>`): inventory, cleaning, image and config-drive writes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from metalflow.api.configdrive import ConfigDriveStaged
from metalflow.api.erase import DiskErasure, EraseSpec
from metalflow.api.models import (
    ImageSpec,
    Model,
    RootDeviceHints,
)

AGENT_INVENTORY = "agent.inventory"
AGENT_CLEAN = "agent.clean"
AGENT_WRITE_IMAGE = "agent.write_image"
AGENT_WRITE_CONFIGDRIVE = "agent.write_configdrive"
AGENT_CUSTOM_DEPLOY = "agent.custom_deploy"


# ---- in-band agent ----
class CleanRequest(Model):
    mode: str = Field(description="metadata | disabled | erase")
    erase: EraseSpec | None = Field(default=None, description="mode erase: the methods (spec.erase).")


class CleanResult(Model):
    devices: list[str] = Field(default_factory=list)
    bytes_erased: int = 0
    erasure: list[DiskErasure] = Field(default_factory=list)


class WriteImageRequest(Model):
    image: ImageSpec
    root_device_hints: RootDeviceHints | None = None
    compression: Literal["", "gzip"] = Field(
        default="", description="How the download is compressed (an OCI layer's media type); hashed as sent."
    )


class WriteImageResult(Model):
    device: str
    bytes_written: int
    checksum: str
    checksum_type: str


class CustomDeployRequest(Model):
    """metal3's spec.customDeploy: run the named deploy method of the agent's registry
    (activities/agent/deploy_methods.py) instead of the default image write."""

    method: str
    image: ImageSpec | None = None
    root_device_hints: RootDeviceHints | None = None


class WriteConfigDriveRequest(Model):
    device: str
    config_drive: ConfigDriveStaged
