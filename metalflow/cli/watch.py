"""`metalflow watch NAME`: one host's live progress until it settles.

Each change of state or step is printed as a line (so the output is a readable log when
piped), while a live panel shows the running step's activities and the image writer's
heartbeat (bytes written of total).
"""

from __future__ import annotations

import asyncio

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from temporalio.client import Client

from metalflow.api.models import HostRef, HostStatus
from metalflow.client import operations
from metalflow.client.agent_log import Tail
from metalflow.client.progress import StepProgress, human_bytes, last_image_write, running_steps


def _headline(ref: HostRef, st: HostStatus) -> str:
    parts = [f"{ref.namespace}/{ref.name}", st.provisioning.state.value or "none"]
    parts.append("power on" if st.powered_on else "power off")
    if st.current_step:
        parts.append(f"step {st.current_step}")
    if st.error_type:
        parts.append(f"{st.error_type.value}: {st.error_message}")
    if st.paused:
        parts.append("paused")
    return " | ".join(parts)


def _activity_line(step: StepProgress) -> list[str]:
    lines = []
    for a in step.activities:
        text = f"  {step.workflow_type} > {a.activity_type} (attempt {a.attempt})"
        done = a.bytes_done
        if done is not None:
            total = a.heartbeat.get("total")
            text += f": {human_bytes(done)} ({done} bytes)"
            if isinstance(total, int) and total > 0:
                text += f" of {human_bytes(total)} ({100 * done // total}%)"
        lines.append(text)
    return lines


def _panel(ref: HostRef, st: HostStatus, steps: list[StepProgress]) -> Group:
    table = Table(box=None, show_header=False)
    table.add_row(Text(_headline(ref, st), style="red" if st.error_type else "bold"))
    for step in steps:
        table.add_row(f"  running {step.workflow_type} ({step.workflow_id})")
        for line in _activity_line(step):
            table.add_row(line)
    return Group(table)


async def watch_host(
    client: Client,
    ref: HostRef,
    console: Console,
    timeout: float,
    interval: float = 0.5,
    agent_log: Tail | None = None,
) -> HostStatus:
    """Poll the host's query and its running step until it settles; return the last status.
    With AGENT_LOG, the host's agent log lines (from the boot server) are printed as they come."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: set[str] = set()
    last_line = ""
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        while True:
            st = await operations.status(client, ref)
            spec = await operations.spec(client, ref)
            steps = await running_steps(client, ref)
            line = _headline(ref, st)
            if line != last_line:
                live.console.print(line)
                last_line = line
            for step in steps:
                for text in _activity_line(step):
                    key = f"{step.workflow_id}:{text}"
                    if key not in seen:
                        seen.add(key)
                        live.console.print(text)
            if agent_log is not None:
                for text in await asyncio.to_thread(agent_log.poll):
                    live.console.print(Text(f"  agent| {text}"))
            live.update(_panel(ref, st, steps))
            if not st.current_step and not steps and operations.settled(st, spec.image is not None):
                break
            if loop.time() > deadline:
                raise TimeoutError(f"{ref.namespace}/{ref.name} did not settle within {timeout:.0f}s")
            await asyncio.sleep(interval)
    written = await last_image_write(client, ref)
    if written is not None and written.image is not None:
        console.print(
            f"last image write: {human_bytes(written.bytes_written)} ({written.bytes_written} bytes) "
            f"of {written.image.url} to {written.root_device}"
        )
    console.print(f"settled: {_headline(ref, st)}")
    return st
