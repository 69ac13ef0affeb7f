"""Config-drive contracts: staging the drive the agent writes (references in, a URL out)."""

from __future__ import annotations

from metalflow.api.models import (
    HostRef,
    Model,
    SecretRef,
)

CONFIGDRIVE_STAGE = "configdrive.stage"


class ConfigDriveRequest(Model):
    host: HostRef
    user_data: SecretRef | None = None
    network_data: SecretRef | None = None
    meta_data: SecretRef | None = None


class ConfigDriveStaged(Model):
    """Where the agent fetches the built config drive; the URL carries no secret content."""

    url: str
    sha256: str
    size_bytes: int
