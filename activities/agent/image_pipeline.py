"""The image download as a pipeline: one thread reads, one hashes, the caller writes.

On one thread the socket copy, sha256 and the page-cache write wait on each other (0.65-0.77x
`curl | dd`); the three release the GIL for large buffers (socket readinto, hashlib above 2 KiB,
os.write), so threads overlap them. The reader fills a few large page-aligned buffers in turn
straight from the socket (http.client's readinto: urllib3's own readinto copies through read()),
and a buffer goes back to it only once it is both hashed and written: memory stays at
DEPTH x CHUNK whatever the image's size, and no byte is written that the digest will not cover.

The digest is over the bytes as sent; a gzip download is inflated after, a bounded piece at a
time, so a small chunk of a highly compressed image never becomes gigabytes in memory.
"""

from __future__ import annotations

import hashlib
import mmap
import queue
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import requests

CHUNK = 8 << 20
DEPTH = 4  # buffers in flight: one being read, one hashed and written, two read ahead
_GZIP = 16 + zlib.MAX_WBITS


class BrokeOff(Exception):
    """The download failed or ended before its Content-Length (the reader thread's error, carried
    to the caller)."""


class Download:
    """The response's body as chunks (`chunks`), read ahead and hashed into `digest` by threads.

    A chunk is valid until the next one is asked for; the digest is complete once the last was.
    """

    def __init__(self, resp: requests.Response, digest: hashlib._Hash, compression: str) -> None:
        self._fp: Any = resp.raw._fp  # http.client.HTTPResponse: de-chunks, stops at Content-Length
        self.digest = digest
        self.gzip = compression == "gzip"
        self._inflate = zlib.decompressobj(_GZIP)
        self._stop = False
        self._free: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._filled: queue.SimpleQueue[tuple[memoryview, int] | BaseException] = queue.SimpleQueue()
        self._to_hash: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._hashed: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        for _ in range(DEPTH):
            self._free.put(memoryview(mmap.mmap(-1, CHUNK)))  # anonymous map: page-aligned
        self._reader = threading.Thread(target=self._read, name="image-read", daemon=True)
        self._hasher = threading.Thread(target=self._hash, name="image-hash", daemon=True)
        self._reader.start()
        self._hasher.start()

    def _read(self) -> None:
        try:
            while not self._stop and (buf := self._free.get()) is not None:
                got = 0
                while got < CHUNK and (n := self._fp.readinto(buf[got:])):
                    got += n
                if got < CHUNK and self._fp.length:  # http.client ends a cut-off body quietly
                    raise BrokeOff(f"the connection closed {self._fp.length} bytes before its end")
                self._to_hash.put(buf[:got])
                self._filled.put((buf, got))
                if got < CHUNK:
                    return
        except BaseException as err:  # socket errors and timeouts, a broken chunked encoding
            self._filled.put(err)

    def _hash(self) -> None:
        try:
            while (data := self._to_hash.get()) is not None:
                self.digest.update(data)
                self._hashed.put(None)
        except BaseException as err:
            self._hashed.put(err)

    def _wire(self) -> Iterator[memoryview]:
        while True:
            item = self._filled.get()
            if isinstance(item, BrokeOff):
                raise item
            if isinstance(item, BaseException):
                raise BrokeOff(str(item) or type(item).__name__) from item
            buf, got = item
            if got:
                yield buf[:got]
            # the caller has written it: reuse the buffer once it is hashed too
            if (err := self._hashed.get()) is not None:
                raise err
            self._free.put(buf)
            if got < CHUNK:
                return

    def chunks(self) -> Iterator[memoryview | bytes]:
        """The image's bytes: the wire's chunks, or for gzip their inflated pieces (at most CHUNK each)."""
        return self._inflated(self._wire()) if self.gzip else self._wire()

    def _inflated(self, wire: Iterator[memoryview]) -> Iterator[bytes]:
        for data in wire:
            rest: memoryview | bytes = data
            while rest:
                if self._inflate.eof:
                    self._inflate = zlib.decompressobj(_GZIP)  # the next gzip member
                out = self._inflate.decompress(rest, CHUNK)
                rest = self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail
                if out:
                    yield out
        if not self._inflate.eof and (tail := self._inflate.flush()):
            yield tail  # a cut-off stream: `cut_short` says so, the digest may too

    def cut_short(self) -> bool:
        """A gzip stream that ended inside a member: its digest may match (the publisher's file
        was cut), but the image is not all there."""
        return self.gzip and not self._inflate.eof

    def close(self) -> None:
        """Stop both threads; the reader finishes the read it is in (one chunk at most) first, so
        the response is never closed under it."""
        self._stop = True
        self._free.put(None)
        self._to_hash.put(None)
        self._reader.join()
        self._hasher.join()
