"""Client-side API for claims and machine sets (CLI, scripts, tests, and the pool activities)."""

from __future__ import annotations

import asyncio
import random

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from metalflow.api.claims import Claim, ClaimStatus, MachineSetSpec, MachineSetStatus
from metalflow.api.pools import (
    ALLOCATOR_WORKFLOW,
    MACHINESET_WORKFLOW,
    AllocatorState,
    MachineSetInput,
    allocator_id,
    machineset_id,
)


async def allocator(client: Client, namespace: str, task_queue: str) -> WorkflowHandle[object, None]:
    """The namespace's allocator, started on first use (one per namespace, by id)."""
    return await client.start_workflow(
        ALLOCATOR_WORKFLOW,
        AllocatorState(namespace=namespace),
        id=allocator_id(namespace),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"host allocator for namespace {namespace}",
    )


async def _update(handle: WorkflowHandle[object, None], name: str, arg: object) -> ClaimStatus:
    """Temporal admits a bounded number of in-flight updates per workflow; back off and retry."""
    delay = 0.1
    for _ in range(100):
        try:
            return await handle.execute_update(name, arg, result_type=ClaimStatus)
        except RPCError as err:
            # Too many in-flight updates, or an update aborted by a failed/timed-out workflow task:
            # both are safe to retry, since claims and releases are idempotent by claim id.
            if err.status not in (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE):
                raise
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            pass
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 2.0)
    raise TimeoutError(f"the allocator stayed too busy to take {name}({arg!r})")


async def claim(client: Client, c: Claim, task_queue: str) -> ClaimStatus:
    return await _update(await allocator(client, c.namespace, task_queue), "claim", c)


async def release(client: Client, namespace: str, claim_id: str, task_queue: str) -> ClaimStatus:
    return await _update(await allocator(client, namespace, task_queue), "release", claim_id)


async def claims(client: Client, namespace: str) -> list[ClaimStatus]:
    handle = client.get_workflow_handle(allocator_id(namespace))
    return await handle.query("claims", result_type=list[ClaimStatus])


async def apply_machineset(
    client: Client, namespace: str, name: str, spec: MachineSetSpec, task_queue: str
) -> MachineSetStatus:
    """Start the set, or send it the new spec (scale / new template: rolling re-image)."""
    handle = await client.start_workflow(
        MACHINESET_WORKFLOW,
        MachineSetInput(namespace=namespace, name=name, spec=spec),
        id=machineset_id(namespace, name),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"machine set {namespace}/{name}",
    )
    return await handle.execute_update("apply", spec, result_type=MachineSetStatus)


async def machineset_status(client: Client, namespace: str, name: str) -> MachineSetStatus:
    handle = client.get_workflow_handle(machineset_id(namespace, name))
    return await handle.query("status", result_type=MachineSetStatus)
