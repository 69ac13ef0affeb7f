"""The image download pipeline with small chunks: many buffers' worth of body, bytes and digest exact,
gzip inflated across chunk and member boundaries, and every way a download fails a BrokeOff."""

from __future__ import annotations

import gzip
import hashlib
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fixtures.www import BROKEN, NO_LENGTH, serve_directory

from activities.agent import image_pipeline
from activities.agent.image_pipeline import BrokeOff, Download

CHUNK = 64 << 10


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_pipeline, "CHUNK", CHUNK)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    root = tmp_path_factory.mktemp("site")
    with serve_directory(root) as url:
        yield root, url


def body(n: int) -> bytes:
    return b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(n // 32 + 1))[:n]


def drain(url: str, compression: str = "") -> tuple[bytes, str, list[int], Download]:
    resp = requests.get(url, stream=True, timeout=10)
    src = Download(resp, hashlib.sha256(), compression)
    try:
        sizes, out = [], bytearray()
        for chunk in src.chunks():
            sizes.append(len(chunk))
            out += chunk
        return bytes(out), src.digest.hexdigest(), sizes, src
    finally:
        src.close()
        resp.close()


@pytest.mark.parametrize("prefix", ["/", NO_LENGTH])
@pytest.mark.parametrize("size", [0, CHUNK, 20 * CHUNK + 123])
def test_every_byte_arrives_in_order_and_is_hashed(site: tuple[Path, str], prefix: str, size: int) -> None:
    data = body(size)
    (site[0] / f"b{size}").write_bytes(data)
    got, digest, sizes, _ = drain(f"{site[1]}{prefix}b{size}")
    assert got == data and digest == hashlib.sha256(data).hexdigest()
    assert all(s == CHUNK for s in sizes[:-1])  # whole buffers: large writes


def test_gzip_members_across_chunks_inflate_in_bounded_pieces(site: tuple[Path, str]) -> None:
    data = body(30 * CHUNK) + bytes(40 * CHUNK)  # the zeros inflate ~1000x: pieces must stay bounded
    wire = gzip.compress(data[: CHUNK // 3]) + gzip.compress(data[CHUNK // 3 :])
    (site[0] / "g.gz").write_bytes(wire)
    got, digest, sizes, src = drain(f"{site[1]}/g.gz", "gzip")
    assert got == data and digest == hashlib.sha256(wire).hexdigest()  # the digest is the wire's
    assert max(sizes) <= CHUNK and not src.cut_short()
    (site[0] / "cut.gz").write_bytes(wire[:-CHUNK])
    assert drain(f"{site[1]}/cut.gz", "gzip")[3].cut_short()


def test_a_body_shorter_than_its_content_length_broke_off(site: tuple[Path, str]) -> None:
    (site[0] / "half").write_bytes(body(10 * CHUNK))
    with pytest.raises(BrokeOff, match=r"closed \d+ bytes before its end"):
        drain(f"{site[1]}{BROKEN}half")


def test_a_reset_connection_broke_off() -> None:
    """A socket error on the reader thread reaches the caller as BrokeOff, not as an OSError that
    could pass for a disk's."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + bytes(3 * CHUNK))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # linger 0: a reset, not an orderly end

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(BrokeOff):
            drain(f"http://127.0.0.1:{listener.getsockname()[1]}/x")
    finally:
        listener.close()


def test_closing_mid_download_stops_the_threads(site: tuple[Path, str]) -> None:
    (site[0] / "big").write_bytes(body(100 * CHUNK))
    resp = requests.get(f"{site[1]}/big", stream=True, timeout=10)
    src = Download(resp, hashlib.sha256(), "")
    assert len(next(src.chunks())) == CHUNK
    src.close()
    resp.close()
    assert not any(t.name.startswith("image-") for t in threading.enumerate())
