"""The agent's keepalive (activities/agent/keepalive.py): a body blocked in the kernel (a write
stalled behind an md resync) still heartbeats its latest progress, so the server does not hand the
activity to a second writer; the repeats stop when the body ends."""

from __future__ import annotations

import threading

from temporalio.testing import ActivityEnvironment

from activities.agent.keepalive import keepalive


def test_a_blocked_body_repeats_its_latest_progress_and_stops_after() -> None:
    env = ActivityEnvironment()
    beats: list[tuple[object, ...]] = []
    three = threading.Event()

    def seen(*details: object) -> None:
        beats.append(details)
        if len(beats) >= 4:
            three.set()

    env.on_heartbeat = seen

    def body() -> int:
        with keepalive(every=0.1) as beat:
            beat({"bytes_written": 4096})
            # the write blocks: no progress call until the keepalive thread has beaten 3 times
            assert three.wait(10), f"only {len(beats)} heartbeats while the body was blocked"
        return len(beats)

    at_exit = env.run(body)
    assert beats[0] == ({"bytes_written": 4096},)
    assert all(b == ({"bytes_written": 4096},) for b in beats), beats
    # nothing after the body ended (the thread is joined on exit)
    assert len(beats) == at_exit
