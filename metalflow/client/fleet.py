"""Start a FleetWorkflow of any size: its hosts go in parts of a bounded payload size.

The server refuses a payload over 2 MB and the SDK warns past 512 KB; a host's spec is about
1.2 KB, so one input held some 1,700 hosts at most. The first part rides in the start, the
rest follow by the fleet's `hosts` signal, each placed by its offset (a part sent twice
changes nothing); the fleet applies nothing before all are in (workflows/fleet.py).
"""

from __future__ import annotations

import contextlib
from typing import Any

from temporalio.client import Client, WorkflowHandle

from metalflow.api.fleet import FLEET_HOSTS_SIGNAL, FLEET_WORKFLOW, FleetHosts, FleetInput, FleetProgress
from metalflow.api.models import Host

PART_BYTES = 256 * 1024  # well under the SDK's 512 KB warning, with room for the input's other fields


def parts(hosts: list[Host], limit: int = PART_BYTES) -> list[tuple[int, list[Host]]]:
    """Consecutive (offset, hosts) parts whose JSON stays within `limit` bytes (a host at least)."""
    out: list[tuple[int, list[Host]]] = []
    start = size = 0
    for i, host in enumerate(hosts):
        n = len(host.model_dump_json()) + 1
        if i > start and size + n > limit:
            out.append((start, hosts[start:i]))
            start, size = i, 0
        size += n
    if hosts:
        out.append((start, hosts[start:]))
    return out


async def start_fleet(
    client: Client,
    hosts: list[Host],
    *,
    fleet_id: str,
    task_queue: str,
    limit: int | None = None,
    timeout_seconds: float = 3600,
    part_bytes: int = PART_BYTES,
    **start: Any,
) -> WorkflowHandle[Any, FleetProgress]:
    """Start the fleet with its first part and signal the rest; `start`: more start options.
    A part that cannot be sent ends the fleet (it has applied nothing) and raises."""
    split = parts(hosts, part_bytes) or [(0, [])]
    inp = FleetInput(
        hosts=split[0][1],
        total=len(hosts) if len(split) > 1 else None,
        limit=limit,
        timeout_seconds=timeout_seconds,
    )
    handle = await client.start_workflow(
        FLEET_WORKFLOW, inp, id=fleet_id, task_queue=task_queue, result_type=FleetProgress, **start
    )
    try:
        for offset, part in split[1:]:
            await handle.signal(FLEET_HOSTS_SIGNAL, FleetHosts(offset=offset, hosts=part))
    except Exception:
        with contextlib.suppress(Exception):
            await handle.terminate(reason="the client could not send all the fleet's hosts")
        raise
    return handle
