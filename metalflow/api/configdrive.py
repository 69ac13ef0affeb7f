"""Config-drive contracts: staging the drive the agent writes (references in, a URL out), and
removing it once written. The URL is a plain address: the boot server serves the drive only
with the host's current agent token (activities/boot/agent_tokens.py)."""

from __future__ import annotations

from typing import Any

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


# ---- networkData against the host (before anything is written) ----
NETWORK_DATA_CHECK = "configdrive.check_network_data"
# OpenStack link types that are a NIC of the host (bonds and VLANs sit on top of these).
PHYSICAL_LINK_TYPES = ("phy", "ethernet", "vif", "hw_veb")


class NetworkDataCheck(Model):
    """spec.networkData's physical links against the NICs inspection found (their MACs)."""

    host: HostRef
    network_data: SecretRef
    macs: list[str]


def network_data_mac_problems(network_data: Any, macs: list[str]) -> list[str]:
    """Physical links whose MAC is not a NIC of the host. Names the link by position, never by
    the Secret's values; lists the host's own MACs (from inspection, not secret)."""
    if not isinstance(network_data, dict):
        return ["networkData must be an OpenStack network_data.json object (links, networks, services)"]
    links = network_data.get("links") or []
    if not isinstance(links, list):
        return ["networkData.links must be a list"]
    known = {m.lower() for m in macs}
    problems = []
    for i, link in enumerate(links):
        if not isinstance(link, dict):
            problems.append(f"networkData.links[{i}] must be an object")
            continue
        if str(link.get("type", "phy")) not in PHYSICAL_LINK_TYPES:
            continue
        mac = link.get("ethernet_mac_address")
        if not isinstance(mac, str) or mac.lower() not in known:
            problems.append(
                f"networkData.links[{i}] (type {link.get('type', 'phy')}): its ethernet_mac_address is "
                f"not a NIC of this host (inspection found {', '.join(sorted(known)) or 'no NICs'}); "
                "write one of those MACs"
            )
    return problems
