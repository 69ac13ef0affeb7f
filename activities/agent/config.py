"""What one agent is bound to: its host id and, on emulated servers, file-backed disks and NICs."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, SecretStr

from metalflow.api.models import NIC, Model


class FileDisk(Model):
    """A sparse file standing in for a disk (demo, fleet benchmark, CI)."""

    name: str = Field(description="Device name to report, e.g. /dev/sda")
    path: Path
    size_bytes: int = Field(gt=0)
    model: str = "EMULATED DISK"
    vendor: str = "metalflow"
    serial: str = ""
    wwn: str = ""
    rotational: bool = False
    hctl: str = ""


class AgentConfig(Model):
    host_id: str = Field(description="<namespace>.<name>; the agent polls host-<host_id>")
    disks: list[FileDisk] | None = Field(default=None, description="None: the real /sys/block")
    nics: list[NIC] | None = Field(default=None, description="None: the real /sys/class/net")
    sys_root: Path = Field(default=Path("/"), description="Where /sys and /proc are read from")
    token: SecretStr | None = Field(
        default=None,
        description="This boot's agent token (from the boot medium): the boot server asks for it "
        "before it serves the host's config drive or OCI image",
    )
    boot_server: str = Field(
        default="", description="The boot server's base URL: the only place the token is ever sent"
    )
    boot_server_ca: Path | None = Field(
        default=None, description="The CA of the boot server's HTTPS (from the boot medium); unset: system's"
    )

    @property
    def task_queue(self) -> str:
        return f"host-{self.host_id}"


def load_agent_config(path: Path, host_id: str | None = None) -> AgentConfig:
    data = yaml.safe_load(path.read_text()) or {}
    if host_id:
        data["hostId"] = host_id
    return AgentConfig.model_validate(data)
