"""The rest rules end to end: what a resting host does for each request and spec change.

One host walks inspect-again, reboot, power off and on, a changed BMC (re-registered in place),
provision, deprovision (image cleared) and delete from available; a second is deleted while
provisioned (cleaned first); a third is adopted as externally provisioned and deleted (powered
off first). Real dev server, sushy-emulator and emulated servers. Their histories, recorded
with METALFLOW_RECORD_HISTORIES=1, let the replay test hold every rule's commands in place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest_asyncio
from temporalio.client import Client
from test_lifecycle import wait_status
from tests_support import record

from metalflow.api.models import BMCDetails, HostRef, HostStatus, SecretRef
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from worker.control import build_worker


@pytest_asyncio.fixture
async def dc(client: Client, settings: Settings, ns: str) -> AsyncIterator[Datacenter]:
    async with Datacenter(settings, hosts=3, prefix="rest", namespace=ns) as datacenter:
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                yield datacenter


async def update(client: Client, ref: HostRef, **changes: Any) -> None:
    current = await operations.spec(client, ref)
    await operations.handle_for(client, ref).execute_update("update_spec", current.model_copy(update=changes))


async def reach(client: Client, ref: HostRef, state: S, timeout: float = 300) -> HostStatus:
    st = await wait_status(client, ref, lambda s: s.provisioning.state == state or s.error_type, timeout)
    assert st.error_type is None, st.error_message
    return st


async def deleted(client: Client, ref: HostRef) -> HostStatus:
    await operations.signal(client, ref, "delete")
    st: HostStatus = await asyncio.wait_for(operations.handle_for(client, ref).result(), 300)
    assert st.deleted and st.error_type is None, st.error_message
    return st


async def children(client: Client, ref: HostRef) -> list[str]:
    """The step workflows the host started, in order."""
    history = await operations.handle_for(client, ref).fetch_history()
    return [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_type.name
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]


async def power_calls(client: Client, ref: HostRef) -> int:
    history = await operations.handle_for(client, ref).fetch_history()
    return sum(
        1
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "bmc.power"
    )


async def test_each_request_and_spec_change_at_rest(
    client: Client, settings: Settings, dc: Datacenter, tmp_path: Path
) -> None:
    rest, provisioned, adopted = dc.host(0, image=None), dc.host(1), dc.host(2, externally_provisioned=True)
    for host in (rest, provisioned, adopted):
        await operations.apply(client, host, settings.model_copy(update={"power_check_interval_seconds": 3}))

    ref = rest.ref
    first = (await reach(client, ref, S.AVAILABLE)).operation_history.inspect.start
    await operations.signal(client, ref, "inspect")
    await wait_status(
        client,
        ref,
        lambda s: s.provisioning.state == S.AVAILABLE and s.operation_history.inspect.start != first,
    )
    before = await power_calls(client, ref)
    await operations.signal(client, ref, "reboot")
    deadline = asyncio.get_running_loop().time() + 60
    while await power_calls(client, ref) == before:  # the reboot request is taken at rest
        assert asyncio.get_running_loop().time() < deadline, "no reboot"
        await asyncio.sleep(0.3)
    await update(client, ref, online=False)
    await wait_status(client, ref, lambda s: not s.powered_on)
    await update(client, ref, online=True)
    await wait_status(client, ref, lambda s: s.powered_on)
    other = tmp_path / "other.yaml"
    other.write_bytes(Path(str(dc.credentials.path)).read_bytes())
    moved = SecretRef(name="other", namespace=dc.namespace, path=str(other))
    await update(client, ref, bmc=BMCDetails(address=rest.spec.bmc.address, credentials=moved))
    st = await wait_status(client, ref, lambda s: s.good_credentials.credentials == moved or s.error_type)
    assert st.error_type is None and st.provisioning.state == S.AVAILABLE, "re-registered in place"
    await update(client, ref, image=dc.image_spec())
    await reach(client, ref, S.PROVISIONED)
    await operations.deprovision(client, ref)
    await reach(client, ref, S.AVAILABLE)
    await deleted(client, ref)
    assert await children(client, ref) == [
        *("RegisterHost", "InspectHost", "CleanHost"),
        *("InspectHost", "CleanHost"),  # inspected again: through preparing back to available
        *("RegisterHost", "DeployHost", "CleanHost"),
    ]
    await record(client, ref.workflow_id, "rest-rules")

    await reach(client, provisioned.ref, S.PROVISIONED)
    await deleted(client, provisioned.ref)
    assert (await children(client, provisioned.ref))[-2:] == ["DeployHost", "CleanHost"], "cleaned first"
    await record(client, provisioned.ref.workflow_id, "rest-rules-delete")

    await reach(client, adopted.ref, S.EXTERNALLY_PROVISIONED)
    await deleted(client, adopted.ref)
    assert await children(client, adopted.ref) == ["RegisterHost", "PowerOffHost"], "adopted, powered off"
    await record(client, adopted.ref.workflow_id, "rest-rules-adopt")
