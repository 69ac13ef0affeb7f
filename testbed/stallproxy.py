"""A loopback TCP proxy that can cut a client off without closing anything: a network partition.

Put it between one worker and the Temporal frontend (gRPC is plain TCP to it). `stall()` stops
moving bytes both ways on every connection, open or new, while the sockets stay open: the worker
sees no error, its calls and heartbeats simply never arrive, as across a dead link. `resume()`
lets everything through again, including what was sent meanwhile (a late result).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from testbed.processes import free_port


@dataclass
class StallProxy:
    upstream_host: str
    upstream_port: int
    port: int = 0
    connections: int = 0
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def start(self) -> StallProxy:
        self._flowing.set()
        self.port = self.port or free_port()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def __aenter__(self) -> StallProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            writer.close()
            return
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return
            await self._flowing.wait()  # stalled: hold the bytes, keep the socket open
            writer.write(chunk)
            await writer.drain()
