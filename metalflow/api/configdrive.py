"""Config-drive contracts: staging the drive the agent writes (references in, a URL out), and
removing it once written: the boot server serves it without authentication, to whoever has
the URL, and the URL is in history."""

from __future__ import annotations

from pydantic import Field

from metalflow.api.models import (
    HostRef,
    Model,
    SecretRef,
)

# an attempt names a file on the boot server: letters, digits and dashes (a run id) only
ATTEMPT_PATTERN = r"^[A-Za-z0-9-]{0,64}$"

CONFIGDRIVE_STAGE = "configdrive.stage"
CONFIGDRIVE_REMOVE = "configdrive.remove"


class ConfigDriveRequest(Model):
    host: HostRef
    user_data: SecretRef | None = None
    network_data: SecretRef | None = None
    meta_data: SecretRef | None = None
    attempt: str = Field(
        default="",
        pattern=ATTEMPT_PATTERN,
        description="The deploy attempt the drive is for (DeployHost's run id): staging it again "
        "returns the same URL. Empty: the calling workflow's run.",
    )


class ConfigDriveRemove(Model):
    host: HostRef
    attempt: str = Field(
        default="",
        pattern=ATTEMPT_PATTERN,
        description="That attempt's drive; empty: every drive of the host.",
    )


class ConfigDriveStaged(Model):
    """Where the agent fetches the built config drive; the URL carries no secret content."""

    url: str
    sha256: str
    size_bytes: int
