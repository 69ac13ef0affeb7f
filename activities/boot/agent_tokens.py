"""Agent tokens: one fresh secret per ramdisk boot, the key to that boot's secrets.

Issued when a boot is prepared (activities/boot/__init__.py) and handed to the ramdisk only by
its boot medium: inside the host's own virtual-media ISO, or on the kernel command line of its
iPXE script, which the boot server fills in once (worker/boot_server.py). The boot server asks
for it (`Authorization: Bearer`) before it serves the host's config drive or OCI image grant, so
what the workflow sends to the host's queue is a plain address, useless without the token, and
the token never enters Temporal: history sees its fingerprint only.

A second fetch of a PXE host's script is a security event: whoever fetched first holds the
token, and nothing tells the real host from an impostor that won the race. The token is then
compromised: the boot server serves no secret for it, and the host's next boot (the step's
retry) gets a new one. Virtual media has no such race.

Files under `<boot_dir>/agent-tokens/` (a directory the boot server never serves), per host id:
`<id>.json` the current token (mode 0600), `<id>.served` who fetched the script first,
`<id>.refetched` each later fetch (the security events).
"""

from __future__ import annotations

import contextlib
import enum
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from metalflow.api.agent_proof import fingerprint

# What a per-host iPXE script carries in place of the token until the boot server serves it.
PLACEHOLDER = "@METALFLOW_AGENT_TOKEN@"
KERNEL_ARG = "metalflow.token"


class Medium(enum.StrEnum):
    PXE = "pxe"  # handed out once, in the iPXE script (PXE and UEFI HTTP boot)
    ISO = "iso"  # inside the host's virtual-media ISO


class Verdict(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"  # no Authorization header
    WRONG = "wrong"  # not this host's current token (an earlier boot's, or a guess)
    NONE_ISSUED = "none-issued"  # the host is not in a ramdisk boot
    COMPROMISED = "compromised"  # its PXE script was fetched twice


@dataclass(frozen=True)
class AgentToken:
    value: str
    medium: Medium

    @property
    def fingerprint(self) -> str:
        """What may be shown and stored anywhere: names the token, reveals nothing of it."""
        return fingerprint(self.value)


def token_dir(boot_dir: Path) -> Path:
    return boot_dir / "agent-tokens"


def _path(boot_dir: Path, host_id: str, suffix: str) -> Path:
    if not host_id or "/" in host_id or host_id.startswith("."):
        raise ValueError(f"not a host id: {host_id!r}")
    return token_dir(boot_dir) / f"{host_id}{suffix}"


def issue(boot_dir: Path, host_id: str, medium: Medium) -> AgentToken:
    """A new token for the host's next boot; any earlier one stops working at once."""
    directory = token_dir(boot_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = AgentToken(secrets.token_urlsafe(32), medium)
    tmp = _path(boot_dir, host_id, f".json.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"token": token.value, "medium": medium.value, "issued": time.time()}, f)
    for suffix in (".served", ".refetched"):
        _path(boot_dir, host_id, suffix).unlink(missing_ok=True)
    tmp.replace(_path(boot_dir, host_id, ".json"))
    return token


def renew_for_boot(boot_dir: Path, host_id: str) -> bool:
    """A power action is about to boot the host (activities/bmc): when it network-boots by iPXE
    script, that boot gets a token of its own, which the script's next first fetch hands out. So
    a boot window runs from one power-on to the next, however the host is powered (a step, a
    reboot request, firmware applied at a reboot); a second fetch inside one is the security event."""
    token = current(boot_dir, host_id)
    if token is None or token.medium != Medium.PXE:
        return False
    issue(boot_dir, host_id, Medium.PXE)
    return True


def current(boot_dir: Path, host_id: str) -> AgentToken | None:
    try:
        data = json.loads(_path(boot_dir, host_id, ".json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return AgentToken(str(data["token"]), Medium(data.get("medium", Medium.PXE)))


def revoke(boot_dir: Path, host_id: str) -> None:
    """The host left the ramdisk: its token opens nothing any more."""
    for suffix in (".json", ".served", ".refetched"):
        _path(boot_dir, host_id, suffix).unlink(missing_ok=True)


def hand_out(boot_dir: Path, host_id: str, peer: str) -> AgentToken | None:
    """The token for the first fetch of a PXE host's script; None for any later fetch, which is
    recorded (`refetches`). Atomic across boot-server processes (O_EXCL)."""
    token = current(boot_dir, host_id)
    if token is None or token.medium != Medium.PXE:
        return None
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {peer}\n"
    try:
        fd = os.open(_path(boot_dir, host_id, ".served"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(_path(boot_dir, host_id, ".refetched"), "a") as f:
            f.write(line)
        return None
    with os.fdopen(fd, "w") as f:
        f.write(line)
    return token


def first_fetch(boot_dir: Path, host_id: str) -> str:
    """Who fetched the script first (time and address), or ''."""
    with contextlib.suppress(FileNotFoundError):
        return _path(boot_dir, host_id, ".served").read_text().strip()
    return ""


def refetches(boot_dir: Path, host_id: str) -> list[str]:
    """The later fetches of the current token's script (time and address each)."""
    with contextlib.suppress(FileNotFoundError):
        return _path(boot_dir, host_id, ".refetched").read_text().splitlines()
    return []


def check(boot_dir: Path, host_id: str, authorization: str | None) -> Verdict:
    """Whether an `Authorization` header carries the host's current, uncompromised token."""
    token = current(boot_dir, host_id)
    if token is None:
        return Verdict.NONE_ISSUED
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return Verdict.MISSING
    if not hmac.compare_digest(presented.strip().encode(), token.value.encode()):
        return Verdict.WRONG
    if refetches(boot_dir, host_id):
        return Verdict.COMPROMISED
    return Verdict.OK
