"""TCP forwarder from inside a network namespace to this host's loopback.

The test bed's VM lives in a namespace of its own; the Temporal dev server and the boot server
stay on 127.0.0.1. This process opens its listening sockets inside the namespace (setns, then
back), so the VM reaches them at the namespace's own address and nothing leaves loopback or
the namespace.

    python -m testbed.nsforward NETNS 192.0.2.1:7233=127.0.0.1:7233 ...
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000


def setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def listen_in(netns: str, addresses: list[tuple[str, int]]) -> list[socket.socket]:
    """Listening sockets bound inside `netns`; the process returns to its own namespace."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        setns(target)
        socks = []
        for host, port in addresses:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(64)
            s.setblocking(False)
            socks.append(s)
        return socks
    finally:
        setns(home)
        os.close(home)
        os.close(target)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _handler(target: tuple[str, int]):  # type: ignore[no-untyped-def]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return handle


def _split(hostport: str) -> tuple[str, int]:
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


async def main(netns: str, rules: list[str]) -> None:
    pairs = [(_split(a), _split(b)) for a, b in (r.split("=", 1) for r in rules)]
    socks = listen_in(netns, [p[0] for p in pairs])
    servers = [
        await asyncio.start_server(_handler(target), sock=sock)
        for sock, (_, target) in zip(socks, pairs, strict=True)
    ]
    print("forwarding " + " ".join(rules), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
