"""`metalflow provision --fleet`: run a FleetWorkflow and show its progress live.

The workflow does the work and keeps the tally (its `progress` Query); this module only
starts it, renders the tally with rich, and prints the failures with their errorType.
"""

from __future__ import annotations

import asyncio
import uuid

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from temporalio.client import Client

from metalflow.api.fleet import FleetProgress
from metalflow.api.models import Host, ProvisioningState
from metalflow.client.fleet import start_fleet

# Lifecycle order for the counts table (the enum is declared in that order); anything else follows.
ORDER = ["not started", *(s.value for s in ProvisioningState if s.value)]


def render(p: FleetProgress, title: str) -> RenderableType:
    head = Text(
        f"{title}: {p.settled}/{p.total} settled, {len(p.failed)} failed, {p.delayed} delayed",
        style="bold",
    )
    counts = Table(show_header=True, box=None)
    for col in ("STATE", "HOSTS"):
        counts.add_column(col)
    for state in sorted(p.by_state, key=lambda s: (ORDER.index(s) if s in ORDER else len(ORDER), s)):
        counts.add_row(state, str(p.by_state[state]))
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(p.total, 1), completed=p.settled, width=50),
        f"{100 * p.settled // max(p.total, 1)}%",
    )
    parts: list[RenderableType] = [head, bar, counts]
    if p.failed:
        parts.append(failure_table(p))
    return Group(*parts)


def failure_table(p: FleetProgress) -> Table:
    table = Table(title="failed hosts", title_style="red")
    for col in ("HOST", "STATE", "ERROR TYPE", "ERROR MESSAGE"):
        table.add_column(col)
    for f in sorted(p.failed, key=lambda r: (r.namespace, r.name)):
        table.add_row(f"{f.namespace}/{f.name}", f.state, f.error_type, f.error_message[:160], style="red")
    return table


async def run_fleet(
    client: Client,
    hosts: list[Host],
    task_queue: str,
    limit: int | None,
    timeout: float,
    console: Console,
) -> FleetProgress:
    """Start the fleet, show its progress until it ends, print the summary; return the result."""
    fleet_id = f"fleet/{uuid.uuid4().hex[:12]}"
    handle = await start_fleet(
        client,
        hosts,
        fleet_id=fleet_id,
        task_queue=task_queue,
        limit=limit,
        timeout_seconds=timeout,
        static_summary=f"fleet of {len(hosts)} hosts" + (f", limit {limit}" if limit else ""),
    )
    console.print(f"started {fleet_id} for {len(hosts)} hosts" + (f" (limit {limit})" if limit else ""))
    result = asyncio.ensure_future(handle.result())
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while not result.done():
            progress = await handle.query("progress", result_type=FleetProgress)
            live.update(render(progress, fleet_id))
            await asyncio.wait({result}, timeout=1.0)
        final = result.result()
        live.update(render(final, fleet_id))
    for f in sorted(final.failed, key=lambda r: (r.namespace, r.name)):
        console.print(
            f"FAILED {f.namespace}/{f.name} ({f.state or 'not started'}): {f.error_type}: {f.error_message}",
            style="red",
            soft_wrap=True,
        )
    ok = final.total - len(final.failed)
    if final.timed_out:
        console.print(f"[red]timed out: {final.total - final.settled} hosts had not settled[/red]")
    console.print(f"{ok} of {final.total} hosts done, {len(final.failed)} failed")
    return final
