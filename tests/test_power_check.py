"""A resting host reads its power now and then, as Ironic's power sync does.

A host switched off behind metalflow's back is powered on again (spec.online), a BMC that
starts rejecting its credentials at rest is a power management error, and the error clears
once the BMC answers again. Both ways of reading it: the host itself on a timer (per-host), and
its shard's PowerSyncWorkflow reading all its hosts in one activity a round (batched), which
signals the host only on a change. Real dev server, sushy-emulator and emulated server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import requests
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from test_lifecycle import wait_status
from tests_support import at_rest, backing_off, eventually, record

from metalflow.api.models import BMCDetails, ErrorType, OperationalStatus
from metalflow.api.models import ProvisioningState as S
from metalflow.api.power_sync import (
    POWER_READ_BATCH,
    POWER_SEEN_SIGNAL,
    PowerReading,
    power_sync_id,
    shard_of,
)
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter, write_secret
from testbed.faultproxy import Fault, FaultProxy, Rule
from worker.control import build_worker


@pytest_asyncio.fixture
async def dc(client: Client, settings: Settings, ns: str) -> AsyncIterator[Datacenter]:
    async with Datacenter(settings, hosts=1, namespace=ns) as datacenter:
        with ThreadPoolExecutor(max_workers=8) as executor:
            async with build_worker(client, settings, executor):
                yield datacenter


def activity_name(event: HistoryEvent) -> str:
    """The activity an event schedules, or whose result a local activity marker records."""
    marker = event.marker_recorded_event_attributes
    if marker.marker_name == "core_local_activity":  # the SDK's local activity result
        data = marker.details["data"].payloads[0].data
        return str(json.loads(data).get("activity_type", ""))
    return event.activity_task_scheduled_event_attributes.activity_type.name


def bmc_power(dc: Datacenter) -> str:
    assert dc.sushy is not None
    url = dc.sushy.system_url(dc.systems[0].uuid)
    body = requests.get(url, auth=("admin", dc.password), timeout=10).json()
    return str(body["PowerState"])


@pytest.mark.parametrize("mode", ["per-host", "batched"])
async def test_resting_host_is_powered_back_on_and_a_failing_bmc_is_reported(
    client: Client, settings: Settings, dc: Datacenter, mode: str
) -> None:
    settings = settings.model_copy(update={"power_check_interval_seconds": 2, "power_sync": mode})
    host = dc.host(0, image=None)  # rests in available: no image to deploy
    await operations.apply(client, host, settings)
    st = await wait_status(
        client, host.ref, lambda s: (s.provisioning.state == S.AVAILABLE and s.powered_on) or s.error_type
    )
    assert st.error_type is None, st.error_message

    # Someone switches the server off at its BMC; metalflow sees it and honours spec.online.
    assert dc.sushy is not None
    reset = dc.sushy.system_url(dc.systems[0].uuid) + "/Actions/ComputerSystem.Reset"
    # (off the event loop: the emulator notifies this process's datacenter while it answers)
    resp = await asyncio.to_thread(
        requests.post, reset, json={"ResetType": "ForceOff"}, auth=("admin", dc.password), timeout=10
    )
    assert resp.status_code < 300, resp.text
    await eventually(lambda: bmc_power(dc) == "Off", "the BMC to apply the ForceOff", 60)
    await eventually(lambda: bmc_power(dc) == "On", "metalflow to power the host back on", 120)
    history = await operations.handle_for(client, host.ref).fetch_history()
    ran = [activity_name(e) for e in history.events]
    shard = power_sync_id(host.ref.namespace, shard_of(host.ref.workflow_id))
    if mode == "per-host":
        # registration's validate runs in its child workflow: in the host's own history it is
        # the check, a local activity (its marker), before the power action (an activity)
        assert "bmc.validate" in ran and ran[ran.index("bmc.validate") :].count("bmc.power") >= 1
    else:
        # no read of its own: its shard read it and signalled the change, then the power action
        signals = [e.workflow_execution_signaled_event_attributes.signal_name for e in history.events]
        assert "bmc.validate" not in ran and POWER_SEEN_SIGNAL in signals and "bmc.power" in ran
        shard_events = (await client.get_workflow_handle(shard).fetch_history()).events
        assert POWER_READ_BATCH in [activity_name(e) for e in shard_events]

    # The BMC now rejects the stored credentials: a power management error at rest.
    secret = Path(str(dc.credentials.path))
    write_secret(secret, {"username": "admin", "password": "not-the-password"})
    st = await wait_status(client, host.ref, lambda s: s.error_type is not None, 120)
    assert st.error_type == ErrorType.POWER_MANAGEMENT, st.model_dump_json()
    assert "BMCAuthError" in st.error_message and st.operational_status == OperationalStatus.ERROR
    assert st.error_count >= 1 and st.provisioning.state == S.AVAILABLE

    # Fixed credentials: the next check clears the error (retry skips the back-off; sent once
    # the host is in it, see backing_off).
    write_secret(secret, {"username": "admin", "password": dc.password})
    await backing_off(client, host.ref.workflow_id)
    await operations.signal(client, host.ref, "retry")
    st = await wait_status(client, host.ref, lambda s: s.error_type is None, 120)
    assert st.operational_status == OperationalStatus.OK and st.error_count == 0 and st.powered_on
    if mode == "per-host":
        await asyncio.wait_for(record(client, host.ref.workflow_id, "power-check"), 60)
    else:
        await asyncio.wait_for(record(client, host.ref.workflow_id, "power-sync"), 60)
        await asyncio.wait_for(record(client, shard, "power-sync"), 60)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    """Poll an async check until it holds (a condition wait with a deadline)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_reading_older_than_the_hosts_own_power_action_is_dropped(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    """Batched: a shard's reading that reaches the host while its own power action runs was taken
    before that action's result. Acting on it put a host whose BMC had mended back in error
    (tests/test_bmc_faults.py, in CI); the host drops it. The BMC's answer to the power-off is
    held by a proxy until the reading is in."""
    assert dc.sushy is not None
    settings = settings.model_copy(update={"power_check_interval_seconds": 3600, "power_sync": "batched"})
    async with FaultProxy(dc.sushy.url) as proxy:
        host = dc.host(0, image=None)
        address = f"redfish+http://127.0.0.1:{proxy.port}/redfish/v1/Systems/{dc.systems[0].uuid}"
        host.spec.bmc = BMCDetails(address=address, credentials=dc.credentials)
        await operations.apply(client, host, settings)
        st = await wait_status(
            client, host.ref, lambda s: (s.provisioning.state == S.AVAILABLE and s.powered_on) or s.error_type
        )
        assert st.error_type is None, st.error_message
        wid = host.ref.workflow_id
        await until(lambda: at_rest(client, wid), "the host to rest")
        proxy.add(Rule(Fault.HOLD_RESPONSE, method="POST", path="ComputerSystem.Reset", times=1))
        handle = operations.handle_for(client, host.ref)
        await handle.execute_update("update_spec", host.spec.model_copy(update={"online": False}))

        async def held() -> bool:
            return proxy.held == 1

        await until(held, "the power-off to reach the BMC")
        # the shard read the BMC while it was failing; its signal arrives during the power-off
        stale = PowerReading(host_id=wid, error="the BMC timed out", error_type="BMCTimeout", seq=1)
        await handle.signal(POWER_SEEN_SIGNAL, stale)
        await until(lambda: signalled(handle), "the reading to reach the host")
        proxy.release()
        await wait_status(client, host.ref, lambda s: not s.powered_on)
        await until(lambda: at_rest(client, wid), "the host to rest again")
        st = await operations.status(client, host.ref)
        assert st.error_type is None and st.error_count == 0 and not st.powered_on, st.model_dump_json()


async def signalled(handle: WorkflowHandle[Any, Any]) -> bool:
    events = (await handle.fetch_history()).events
    return any(
        e.workflow_execution_signaled_event_attributes.signal_name == POWER_SEEN_SIGNAL for e in events
    )
