"""Reading a host's agent log from the boot server (worker/agent_logs.py keeps it per boot)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from metalflow.api.models import HostRef


class AgentLogUnavailable(RuntimeError):
    """The boot server has no log for the host yet, or cannot be reached; the message says which."""


@dataclass
class Chunk:
    text: str
    boot: str
    next_offset: int


def _url(base_url: str, ref: HostRef, suffix: str = "", **query: str | int | None) -> str:
    q = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    return f"{base_url.rstrip('/')}/agent-log/{ref.host_id}{suffix}" + (f"?{q}" if q else "")


def read(base_url: str, ref: HostRef, boot: str | None = None, offset: int = 0, timeout: float = 10) -> Chunk:
    """The log of BOOT (default: the latest) from byte OFFSET on."""
    try:
        with urllib.request.urlopen(_url(base_url, ref, boot=boot, offset=offset), timeout=timeout) as resp:
            data = resp.read()
            return Chunk(
                data.decode(errors="replace"),
                resp.headers.get("X-Boot-Id", boot or ""),
                int(resp.headers.get("X-Next-Offset", offset + len(data))),
            )
    except urllib.error.HTTPError as err:
        body = err.read().decode(errors="replace")
        raise AgentLogUnavailable(
            f"{ref.namespace}/{ref.name}: the boot server answered {err.code}: {body}"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        raise AgentLogUnavailable(f"the boot server at {base_url} cannot be reached: {err}") from None


def boots(base_url: str, ref: HostRef, timeout: float = 10) -> list[str]:
    """The boots whose logs the boot server keeps for the host, oldest first."""
    try:
        with urllib.request.urlopen(_url(base_url, ref, "/boots"), timeout=timeout) as resp:
            return list(json.loads(resp.read()))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise AgentLogUnavailable(f"the boot server at {base_url}: {err}") from None


class Tail:
    """Follow a host's latest agent log: each `poll` returns the lines added since the last one
    (a new boot starts from its beginning)."""

    def __init__(self, base_url: str, ref: HostRef) -> None:
        self.base_url, self.ref = base_url, ref
        self.boot: str | None = None
        self.offset = 0
        self._partial = ""

    def poll(self) -> list[str]:
        try:
            chunk = read(self.base_url, self.ref, offset=0 if self.boot is None else self.offset)
        except AgentLogUnavailable:
            return []
        if self.boot is not None and chunk.boot != self.boot:  # the host booted again
            chunk = read(self.base_url, self.ref, boot=chunk.boot, offset=0)
            self._partial = ""
        self.boot, self.offset = chunk.boot, chunk.next_offset
        text = self._partial + chunk.text
        lines = text.split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for its end
        return lines
