"""Heartbeats that say "this agent is alive", not "this disk is fast".

A write to a block device blocks in the kernel when writeback is slow (an md array resyncing
under the image write, a throttled disk); the progress callback then stays silent past the
heartbeat timeout, the server hands the activity to a second attempt, and two writers end up on
one device (seen in `make e2e`: the second write timed out NVMe I/O and the disk dropped off the
bus). A dead ramdisk is what the heartbeat timeout must catch; a slow disk is bounded by the
activity's start-to-close timeout. So while an in-band activity runs, a thread repeats its latest
progress whenever the body has not beaten for EVERY seconds.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from temporalio import activity

EVERY = 10.0


@contextmanager
def keepalive(every: float = EVERY) -> Iterator[Callable[[Any], None]]:
    """Yield `beat(details)`: heartbeat now with DETAILS, and repeat them while the body runs."""
    context = contextvars.copy_context()  # the activity's context, for the heartbeat thread
    latest: list[Any] = [None, time.monotonic()]  # details, when last sent
    lock = threading.Lock()
    stop = threading.Event()

    def repeat() -> None:
        while not stop.wait(every / 2):
            with lock:
                details, sent = latest
                if time.monotonic() - sent < every:
                    continue  # the body beat recently
                latest[1] = time.monotonic()
            try:
                context.run(activity.heartbeat, *(() if details is None else (details,)))
            except Exception:  # a heartbeat the worker could not take: the next one may
                continue

    def beat(details: Any) -> None:
        with lock:
            latest[0], latest[1] = details, time.monotonic()
        activity.heartbeat(details)

    thread = threading.Thread(target=repeat, name="agent-keepalive", daemon=True)
    thread.start()
    try:
        yield beat
    finally:
        stop.set()
        thread.join()
