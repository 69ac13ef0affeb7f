"""Client-side host operations shared by the CLI, the demo and the Kubernetes bridge.

`apply` is idempotent like `kubectl apply`: it starts the host's workflow, or sends the new
spec to the running one as a validated Update.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import WorkflowAlreadyStartedError

from metalflow.api import search_attributes as sa
from metalflow.api import states
from metalflow.api.host import HOST_WORKFLOW, HostWorkflowInput
from metalflow.api.models import Host, HostRef, HostSpec, HostStatus
from metalflow.runtime.settings import Settings


def check_spec(spec: HostSpec) -> None:
    """The workflow's own spec checks, run before anything is sent (raises SpecError)."""
    from metalflow.api.validation import validate_spec

    validate_spec(spec)


def handle_for(client: Client, ref: HostRef) -> WorkflowHandle[object, HostStatus]:
    return client.get_workflow_handle(ref.workflow_id, result_type=HostStatus)


@dataclass
class Applied:
    ref: HostRef
    started: bool


@dataclass(frozen=True)
class StartOptions:
    """How a new host workflow starts: its memo (the bridge tags the object's uid), and paused or
    detached from the first event, so there is no BMC traffic before it is wanted."""

    memo: dict[str, str] = field(default_factory=dict)
    paused: bool = False
    detached: bool = False


async def apply(
    client: Client, host: Host, settings: Settings, options: StartOptions | None = None
) -> Applied:
    """Start the host's workflow, or update its spec."""
    if await start(client, host, settings, options):
        return Applied(host.ref, started=True)
    await handle_for(client, host.ref).execute_update("update_spec", host.spec)
    return Applied(host.ref, started=False)


async def start(client: Client, host: Host, settings: Settings, options: StartOptions | None = None) -> bool:
    """Start the host's workflow in one call; False (and nothing changed) if it already runs."""
    options = options or StartOptions()
    check_spec(host.spec)
    inp = HostWorkflowInput(
        ref=host.ref,
        spec=host.spec,
        ramdisk_boot_timeout_seconds=settings.ramdisk_boot_timeout_seconds,
        history_event_limit=settings.history_event_limit,
        power_check_interval_seconds=settings.power_check_interval_seconds,
        power_sync=settings.power_sync,
        paused=options.paused,
        detached=options.detached,
    )
    try:
        await client.start_workflow(
            HOST_WORKFLOW,
            inp,
            id=host.ref.workflow_id,
            task_queue=settings.task_queue,
            result_type=HostStatus,
            memo=options.memo,
            static_summary=f"host {host.ref.namespace}/{host.ref.name}",
            static_details=f"BMC {host.spec.bmc.address}",
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.HOST_NAME, host.ref.name),
                    SearchAttributePair(sa.HOST_NAMESPACE, host.ref.namespace),
                    SearchAttributePair(sa.HOST_STATE, "registering"),
                    SearchAttributePair(sa.BMC_ADDRESS, host.spec.bmc.address),
                    SearchAttributePair(sa.IMAGE_URL, host.spec.image.url if host.spec.image else ""),
                ]
            ),
        )
        return True
    except WorkflowAlreadyStartedError:
        return False


async def status(client: Client, ref: HostRef) -> HostStatus:
    return await handle_for(client, ref).query("status", result_type=HostStatus)


async def spec(client: Client, ref: HostRef) -> HostSpec:
    return await handle_for(client, ref).query("spec", result_type=HostSpec)


async def deprovision(client: Client, ref: HostRef) -> HostStatus:
    """Clear the image, as removing spec.image from a BareMetalHost does (and spec.join: a
    joined host's Node is drained and deleted first)."""
    current = await spec(client, ref)
    return await handle_for(client, ref).execute_update(
        "update_spec", current.model_copy(update={"image": None, "join": None}), result_type=HostStatus
    )


async def signal(client: Client, ref: HostRef, name: str) -> None:
    await handle_for(client, ref).signal(name)


@dataclass
class HostRow:
    ref: HostRef
    state: str
    operational_status: str
    error_type: str
    bmc: str
    image: str
    running: bool
    start_time: float | None


async def list_hosts(client: Client, query: str = "") -> list[HostRow]:
    """Hosts from Temporal visibility, newest run per host."""
    base = f'WorkflowType="{HOST_WORKFLOW}"'
    rows: dict[str, HostRow] = {}
    async for wf in client.list_workflows(f"{base} AND ({query})" if query else base):
        attrs = wf.typed_search_attributes
        if wf.id in rows:
            continue
        ref = HostRef.from_workflow_id(wf.id)
        rows[wf.id] = HostRow(
            ref=ref,
            state=attrs.get(sa.HOST_STATE) or "",
            operational_status=attrs.get(sa.OPERATIONAL_STATUS) or "",
            error_type=attrs.get(sa.ERROR_TYPE) or "",
            bmc=attrs.get(sa.BMC_ADDRESS) or "",
            image=attrs.get(sa.IMAGE_URL) or "",
            running=wf.status is not None and wf.status.name == "RUNNING",
            start_time=wf.start_time.timestamp() if wf.start_time else None,
        )
    return sorted(rows.values(), key=lambda r: (r.ref.namespace, r.ref.name))


def settled(st: HostStatus, want_image: bool) -> bool:
    """A host is done with what was asked of it: provisioned, or available without an image."""
    return states.settled(st.provisioning.state, want_image, in_error=st.error_type is not None)


async def wait_settled(
    client: Client, hosts: Iterable[Host], timeout: float, poll: float = 0.5
) -> dict[str, HostStatus]:
    """Query each host until all settled (or in error); raise TimeoutError naming the stragglers."""
    wanted = {h.ref.workflow_id: h for h in hosts}
    latest: dict[str, HostStatus] = {}
    deadline = time.monotonic() + timeout
    while True:
        for wid, host in wanted.items():
            latest[wid] = await status(client, host.ref)
        if all(settled(latest[w], wanted[w].spec.image is not None) for w in wanted):
            return latest
        if time.monotonic() > deadline:
            pending = {w: latest[w].provisioning.state.value for w in wanted}
            raise TimeoutError(f"hosts not settled after {timeout:.0f}s: {pending}")
        await asyncio.sleep(poll)
