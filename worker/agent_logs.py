"""The boot server's agent-log endpoint: each host's agent log kept per boot, size-capped.

    POST /agent-log/<host id>?boot=<boot id>    text lines from the agent (activities/agent/logs.py)
    GET  /agent-log/<host id>[?boot=ID&offset=N] the latest (or named) boot's log from byte N;
                                                 X-Boot-Id and X-Next-Offset say where to go on
    GET  /agent-log/<host id>/boots              JSON: the boots kept, oldest first

Files: `<boot dir>/agent-logs/<host id>/<boot id>.log`, at most `max_bytes` each (then one
"truncated" line and nothing more), the newest `keep_boots` per host. Nothing secret arrives
here: the agent redacts before sending.

Who may post: anyone who can reach the boot server today, as for the rest of it. The per-host
token of the security issue (#27) goes in `authorize` (an `Authorization: Bearer` header the
agent sends, checked against the host's token); the handlers already call it for every request.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from aiohttp import web

LOG_DIR = "agent-logs"
MAX_POST_BYTES = 256 << 10
MAX_LOG_BYTES = 8 << 20
KEEP_BOOTS = 5
MAX_READ = 1 << 20
# <namespace>.<name> of Kubernetes names; a boot id is the kernel's UUID or a hex token
HOST_ID = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
BOOT_ID = re.compile(r"^[0-9a-fA-F][0-9a-fA-F-]{7,63}$")
TRUNCATED = "[agent-log: this boot's log reached {cap} bytes; later lines are not kept]\n"


class AgentLogStore:
    def __init__(self, boot_dir: Path, max_bytes: int = MAX_LOG_BYTES, keep_boots: int = KEEP_BOOTS) -> None:
        self.root = boot_dir / LOG_DIR
        self.max_bytes, self.keep_boots = max_bytes, keep_boots
        self._lock = asyncio.Lock()

    def host_dir(self, host_id: str) -> Path:
        if not HOST_ID.match(host_id) or ".." in host_id:
            raise web.HTTPBadRequest(text=f"host id {host_id!r} is not <namespace>.<name>")
        return self.root / host_id

    def boots(self, host_id: str) -> list[str]:
        d = self.host_dir(host_id)
        files = sorted(d.glob("*.log"), key=lambda p: p.stat().st_mtime) if d.is_dir() else []
        return [p.stem for p in files]

    def path(self, host_id: str, boot: str | None) -> Path | None:
        if boot is None:
            boots = self.boots(host_id)
            return self.host_dir(host_id) / f"{boots[-1]}.log" if boots else None
        if not BOOT_ID.match(boot):
            raise web.HTTPBadRequest(text=f"boot {boot!r} is not a boot id (hex and dashes)")
        return self.host_dir(host_id) / f"{boot}.log"

    async def append(self, host_id: str, boot: str, text: str) -> None:
        path = self.path(host_id, boot)
        assert path is not None
        async with self._lock:
            await asyncio.to_thread(self._append, path, text)

    def _append(self, path: Path, text: str) -> None:
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        size = 0 if new else path.stat().st_size
        if size >= self.max_bytes:
            return  # already capped (the truncation line is there)
        data = text.encode()
        if not data.endswith(b"\n"):
            data += b"\n"
        if size + len(data) > self.max_bytes:
            cut = data[: self.max_bytes - size].rfind(b"\n") + 1
            data = data[:cut] + TRUNCATED.format(cap=self.max_bytes).encode()
        with path.open("ab") as f:
            f.write(data)
        if new:
            self._prune(path.parent)

    def _prune(self, host_dir: Path) -> None:
        files = sorted(host_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
        for old in files[: max(0, len(files) - self.keep_boots)]:
            old.unlink(missing_ok=True)


def _clean(text: str) -> str:
    """Printable text only: no terminal escapes from a misbehaving host reach an operator's tty."""
    return "".join(c if c.isprintable() or c in "\n\t" else "?" for c in text)


def authorize(request: web.Request, host_id: str) -> None:
    """Who may read and write HOST_ID's log: everyone for now; #27's per-host token goes here."""
    del request, host_id


def add_routes(app: web.Application, boot_dir: Path) -> AgentLogStore:
    store = AgentLogStore(boot_dir)

    async def post_log(request: web.Request) -> web.Response:
        host_id = request.match_info["host"]
        authorize(request, host_id)
        boot = request.query.get("boot", "")
        if not BOOT_ID.match(boot):
            raise web.HTTPBadRequest(text="boot: give ?boot=<the kernel's boot_id>")
        if request.content_length is not None and request.content_length > MAX_POST_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_POST_BYTES, actual_size=request.content_length)
        body = await request.content.read(MAX_POST_BYTES + 1)
        if len(body) > MAX_POST_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_POST_BYTES, actual_size=len(body))
        await store.append(host_id, boot, _clean(body.decode(errors="replace")))
        return web.Response(status=204)

    async def get_log(request: web.Request) -> web.Response:
        host_id = request.match_info["host"]
        authorize(request, host_id)
        path = store.path(host_id, request.query.get("boot"))
        if path is None or not path.is_file():
            raise web.HTTPNotFound(text=f"no agent log for {host_id} (yet)")
        try:
            offset = max(0, int(request.query.get("offset", "0")))
        except ValueError:
            raise web.HTTPBadRequest(text="offset: give a byte offset (an integer)") from None

        def read() -> bytes:
            with path.open("rb") as f:
                f.seek(offset)
                return f.read(MAX_READ)

        data = await asyncio.to_thread(read)
        return web.Response(
            body=data,
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Boot-Id": path.stem, "X-Next-Offset": str(offset + len(data))},
        )

    async def list_boots(request: web.Request) -> web.Response:
        host_id = request.match_info["host"]
        authorize(request, host_id)
        return web.Response(text=json.dumps(store.boots(host_id)), content_type="application/json")

    app.router.add_post("/agent-log/{host}", post_log)
    app.router.add_get("/agent-log/{host}", get_log)
    app.router.add_get("/agent-log/{host}/boots", list_boots)
    return store
