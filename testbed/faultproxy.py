"""A fault-injecting HTTP reverse proxy for loopback tests and benchmarks.

Put it in front of sushy-emulator (or the image server) and point a host's BMC address at it:
every request is forwarded unless a rule of the programmable schedule matches, and then the
client gets what a sick BMC gives — a 503, a reset connection, a stall, a body that is not
JSON — or the request (or its response) is held until the test releases it, which is how
crash tests pin a call in flight. Every request is logged with what was done to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field
from enum import StrEnum

import aiohttp
from aiohttp import web

from testbed.processes import free_port

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
    "upgrade",
}


_TRUNCATED = b'{"@odata.id": "/redfish/v1/Systems/1", "PowerState": '


class Fault(StrEnum):
    UNAVAILABLE = "503"  # HTTP 503 with a Redfish-style error body
    UNAUTHORIZED = "401"  # HTTP 401: the BMC no longer takes the credentials (e.g. after a reset)
    RESET = "reset"  # TCP reset before any response
    STALL = "stall"  # wait `stall_seconds`, then forward normally
    BAD_JSON = "bad-json"  # 200 with a truncated JSON body
    HOLD = "hold"  # wait for release() before forwarding
    HOLD_RESPONSE = "hold-response"  # forward (the BMC acts), hold the response until release()
    HOLD_AFTER = "hold-after"  # stream `hold_after_bytes` of the body, then wait for release()


_HOLDS = {Fault.HOLD, Fault.HOLD_RESPONSE, Fault.HOLD_AFTER}


@dataclass
class Rule:
    """Matches requests by method and path substring; applies `fault` to every `every`-th match,
    at most `times` times (None: for ever)."""

    fault: Fault
    method: str | None = None
    path: str = ""
    every: int = 1
    times: int | None = None
    stall_seconds: float = 10.0
    hold_after_bytes: int = 0
    body: bytes = b""  # and, when set, a substring of the request body (e.g. b'"Hdd"' in a PATCH)
    matched: int = 0
    applied: int = 0

    def take(self, method: str, path: str, body: bytes = b"") -> bool:
        if self.method and method.upper() != self.method.upper():
            return False
        if self.path not in path or self.body not in body:
            return False
        if self.times is not None and self.applied >= self.times:
            return False
        self.matched += 1
        if self.matched % self.every:
            return False
        self.applied += 1
        return True


@dataclass
class Entry:
    at: float
    method: str
    path: str
    fault: Fault | None
    status: int | None = None
    body: bytes = b""  # the request body's first 1 KiB: what a PATCH or POST asked the BMC to do


@dataclass
class FaultProxy:
    """`async with FaultProxy("http://127.0.0.1:8000") as p:` then point clients at `p.url`,
    `p.add(Rule(...))` to make it sick, `p.clear()` to heal, `p.log` / `p.count()` to see."""

    upstream: str
    rules: list[Rule] = field(default_factory=list)
    log: list[Entry] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _held: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, rule: Rule) -> Rule:
        if rule.fault in _HOLDS and self._release.is_set():
            self._release = asyncio.Event()  # re-arm: a new hold waits for a new release()
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Heal: no more faults; anything held is let go."""
        self.rules.clear()
        self.release()

    def release(self) -> None:
        self._release.set()

    @property
    def held(self) -> int:
        """Requests (or responses) waiting for release() right now."""
        return self._held

    def count(
        self, method: str | None = None, path: str = "", fault: Fault | str | None = "any", body: bytes = b""
    ) -> int:
        return sum(
            1
            for e in self.log
            if (method is None or e.method == method)
            and path in e.path
            and body in e.body
            and (fault == "any" or e.fault == fault)
        )

    async def start(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_read=120)
        )
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _pick(self, method: str, path: str, body: bytes = b"") -> Rule | None:
        for rule in self.rules:
            if rule.take(method, path, body):
                return rule
        return None

    async def _wait_release(self) -> None:
        self._held += 1
        try:
            await self._release.wait()
        finally:
            self._held -= 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rule = self._pick(request.method, request.path_qs, body)
        entry = Entry(
            time.monotonic(), request.method, request.path_qs, rule.fault if rule else None, body=body[:1024]
        )
        self.log.append(entry)
        fault = rule.fault if rule else None
        if fault == Fault.UNAVAILABLE:
            entry.status = 503
            error = '{"error": {"code": "Base.1.0.GeneralError", "message": "injected: service unavailable"}}'
            return web.Response(status=503, text=error, content_type="application/json")
        if fault == Fault.UNAUTHORIZED:
            entry.status = 401
            error = '{"error": {"code": "Base.1.0.GeneralError", "message": "injected: unauthorized"}}'
            return web.Response(
                status=401, text=error, content_type="application/json", headers={"WWW-Authenticate": "Basic"}
            )
        if fault == Fault.RESET:
            _reset(request)
            raise asyncio.CancelledError  # nothing more goes out on this connection
        if fault == Fault.STALL and rule is not None:
            await asyncio.sleep(rule.stall_seconds)
        if fault == Fault.HOLD:
            await self._wait_release()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        assert self._session is not None
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body or None, headers=headers
        ) as upstream:
            entry.status = upstream.status
            if fault == Fault.BAD_JSON:
                await upstream.read()
                return web.Response(status=200, body=_TRUNCATED, content_type="application/json")
            if fault == Fault.HOLD_RESPONSE:
                payload = await upstream.read()
                await self._wait_release()
                return web.Response(status=upstream.status, body=payload, headers=_copy(upstream.headers))
            response = web.StreamResponse(status=upstream.status, headers=_copy(upstream.headers))
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            sent = 0
            held = fault != Fault.HOLD_AFTER
            async for chunk in upstream.content.iter_chunked(1 << 20):
                await response.write(chunk)
                sent += len(chunk)
                if not held and rule is not None and sent >= rule.hold_after_bytes:
                    held = True
                    await self._wait_release()
            await response.write_eof()
            return response


def _copy(headers: object) -> dict[str, str]:
    return {k: v for k, v in dict(headers).items() if k.lower() not in _HOP_BY_HOP}  # type: ignore[call-overload]


def _reset(request: web.Request) -> None:
    """Abort with SO_LINGER 0, so the client sees a TCP RST (ECONNRESET), as from a rebooting BMC."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
