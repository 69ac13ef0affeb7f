"""The agent's side of agent tokens (activities/boot/agent_tokens.py): present this boot's token
to the boot server, and to nothing else, when fetching the host's config drive or image; over
HTTPS, check the boot server against the CA its boot medium carried."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from activities.agent.config import AgentConfig
from metalflow.api.errors import AGENT_TOKEN_REFUSED, transient


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def headers_for(config: AgentConfig, url: str) -> dict[str, str]:
    """`Authorization: Bearer <token>` for a URL on the boot server; nothing for any other URL
    (an image on someone else's server never sees the token)."""
    if config.token is None or not config.boot_server or _origin(url) != _origin(config.boot_server):
        return {}
    return {"Authorization": f"Bearer {config.token.get_secret_value()}"}


def verify_for(config: AgentConfig, url: str) -> str | bool:
    """requests' `verify`: the boot medium's CA for the boot server, the system's for the rest."""
    if (
        config.boot_server_ca is not None
        and config.boot_server
        and _origin(url) == _origin(config.boot_server)
    ):
        return str(config.boot_server_ca)
    return True


def refused(resp: requests.Response, what: str, url: str) -> Exception | None:
    """The typed error for a boot server that refused the token (401/403), else None. Its text
    names the reason and holds no secret (worker/boot_server.py). Retryable: the agent stops
    (AgentActivities), and the retry finds a new boot's agent with a new token."""
    if resp.status_code not in (401, 403):
        return None
    reason = resp.text.strip()[:300] or f"HTTP {resp.status_code}"
    return transient(
        AGENT_TOKEN_REFUSED,
        f"{what} {url}: the boot server refused this ramdisk's agent token: {reason}; this agent "
        "stops, and the host boots again with a new token",
    )
