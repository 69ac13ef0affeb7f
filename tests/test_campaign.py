"""Fleet servicing campaigns (issue #26, first part): one firmware change rolled across the
provisioned hosts a label selector picks, canary first, then waves, through the real Temporal dev
server and sushy-emulator (its BIOS pending until a boot, SimpleUpdate as Tasks: testbed/). Each
BIOS PATCH and SimpleUpdate is counted at the emulator's request log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from tests_support import emulator_bios_writes as bios_writes
from tests_support import record, wait_status

from metalflow.api.campaign import (
    CAMPAIGN_APPLY,
    CAMPAIGN_WAIT,
    Campaign,
    CampaignChange,
    CampaignPhase,
    CampaignSpec,
    CampaignStatus,
    HostPhase,
    LabelSelector,
)
from metalflow.api.firmware_components import FirmwareUpdate
from metalflow.api.models import ProvisioningState as S
from metalflow.client import campaigns, operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from worker.control import build_worker

RACK = {"rack": "r1"}
TURBO_OFF = {"ProcTurboMode": "Disabled"}


@pytest_asyncio.fixture
async def dc(client: Client, settings: Settings, ns: str) -> AsyncIterator[Datacenter]:
    """Four provisioned hosts: three in rack r1 (the campaign's), one in r2 (never touched)."""
    async with Datacenter(settings, hosts=4, namespace=ns, image_mib=4) as datacenter:
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                hosts = [datacenter.host(i, labels=RACK if i < 3 else {"rack": "r2"}) for i in range(4)]
                for host in hosts:
                    await operations.apply(client, host, settings)
                for host in hosts:
                    st = await wait_status(
                        client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type
                    )
                    assert st.error_type is None, st.error_message
                yield datacenter


def campaign(ns: str, name: str, **spec: Any) -> Campaign:
    return Campaign(
        name=name,
        namespace=ns,
        spec=CampaignSpec(selector=LabelSelector(match_labels=RACK), **spec),
    )


def scheduled(history: Any, activity_type: str) -> list[int]:
    """Event ids of the campaign's ACTIVITY_TYPE activities, in the order it scheduled them."""
    return [
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
    ]


async def run(client: Client, settings: Settings, c: Campaign) -> CampaignStatus:
    handle = await campaigns.apply(client, c, settings.task_queue)
    return await asyncio.wait_for(handle.result(), timeout=300)


async def test_an_invalid_change_touches_nothing_then_a_valid_one_services_canary_then_waves_once(
    client: Client, settings: Settings, dc: Datacenter, ns: str
) -> None:
    # an invalid setting is refused before any host is touched (checked against every host's registry)
    bad = campaign(ns, "maybe", change=CampaignChange(firmware_settings={"ProcTurboMode": "Maybe"}))
    st = await run(client, settings, bad)
    assert st.phase == CampaignPhase.FAILED and st.message.startswith("nothing was changed: "), st
    assert "ProcTurboMode: 'Maybe' is not allowed" in st.message, st.message
    assert all(h.phase == HostPhase.PENDING for h in st.hosts), st
    assert [bios_writes(dc, i) for i in range(4)] == [[], [], [], []]
    for i in range(3):
        assert (await operations.spec(client, dc.host(i).ref)).firmware_settings == {}

    c = campaign(
        ns, "turbo-off", change=CampaignChange(firmware_settings=TURBO_OFF), canary=1, max_unavailable=2
    )
    st = await run(client, settings, c)
    assert st.phase == CampaignPhase.SUCCEEDED, st
    assert (st.waves, st.total, st.count(HostPhase.DONE)) == (2, 3, 3), st
    assert [(h.ref.name, h.wave, h.phase) for h in st.hosts] == [
        (dc.host(i).ref.name, 0 if i == 0 else 1, HostPhase.DONE) for i in range(3)
    ]
    assert st.drift == [], st.drift  # every selected host reports the change
    # operators find it by phase in the UI and CLI (the CampaignPhase search attribute)
    found = [
        wf.id
        async for wf in client.list_workflows(f'CampaignPhase="Succeeded" AND WorkflowId="{c.workflow_id}"')
    ]
    assert found == [c.workflow_id]
    # every selected host's BIOS written exactly once, the other rack's never
    assert [bios_writes(dc, i) for i in range(4)] == [[TURBO_OFF], [TURBO_OFF], [TURBO_OFF], []]
    for i in range(3):  # back to provisioned with the change applied, the OS untouched
        host = await operations.status(client, dc.host(i).ref)
        assert host.provisioning.state == S.PROVISIONED and host.firmware_settings is not None
        assert host.firmware_settings.settings["ProcTurboMode"] == "Disabled"
    # canary first: the wave's hosts got the change only after the canary was back and healthy
    history = await client.get_workflow_handle(c.workflow_id).fetch_history()
    applied, waited = scheduled(history, CAMPAIGN_APPLY), scheduled(history, CAMPAIGN_WAIT)
    canary_healthy = next(
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and e.activity_task_completed_event_attributes.scheduled_event_id == waited[0]
    )
    assert len(applied) == 3 and min(applied[1:]) > canary_healthy, (applied, canary_healthy)
    await record(client, c.workflow_id, "campaign-drift")


async def test_a_failing_canary_halts_the_campaign_before_the_first_wave(
    client: Client, settings: Settings, dc: Datacenter, ns: str
) -> None:
    """The canary's firmware image fails at the BMC (its Task ends in Exception): the campaign
    halts, though the failure budget would allow it; the other hosts get no SimpleUpdate and keep
    their spec."""
    bad = FirmwareUpdate(component="bios", url="http://images.example/bios-9.fail")
    c = campaign(
        ns,
        "bad-bios",
        change=CampaignChange(firmware_updates=[bad]),
        canary=1,
        max_unavailable=2,
        failure_budget=2,
    )
    st = await run(client, settings, c)
    assert st.phase == CampaignPhase.HALTED and st.message.startswith("the canary failed: "), st
    assert [h.phase for h in st.hosts] == [HostPhase.FAILED, HostPhase.PENDING, HostPhase.PENDING], st
    assert "servicing error" in st.hosts[0].message and "bios-9.fail" in st.hosts[0].message, st
    log = dc.sushy.process.log_path.read_text()
    updates = [log.count(f"metalflow-testbed: SimpleUpdate {dc.systems[i].uuid} ") for i in range(4)]
    assert updates == [1, 0, 0, 0], updates
    for i in (1, 2):
        assert (await operations.spec(client, dc.host(i).ref)).firmware_updates == []
    # the drift report: none of the three has the update
    assert [(d.ref.name, d.differences) for d in st.drift] == [
        (dc.host(i).ref.name, ["bios update http://images.example/bios-9.fail not applied"]) for i in range(3)
    ]


async def test_pause_holds_the_next_wave_and_abort_starts_no_other_host(
    client: Client, settings: Settings, dc: Datacenter, ns: str
) -> None:
    c = campaign(
        ns, "steered", change=CampaignChange(firmware_settings=TURBO_OFF), canary=1, max_unavailable=1
    )
    handle = await campaigns.apply(client, c, settings.task_queue)
    await campaigns.signal(client, ns, c.name, "pause")

    async def until(what: str, pred: Any) -> CampaignStatus:
        deadline = asyncio.get_running_loop().time() + 240
        while not pred(st := await campaigns.status(client, ns, c.name)):
            assert asyncio.get_running_loop().time() < deadline, f"{what} never happened: {st}"
            await asyncio.sleep(0.3)
        return st

    await until(
        "paused and idle", lambda s: s.phase == CampaignPhase.PAUSED and not s.count(HostPhase.UPDATING)
    )
    await campaigns.signal(client, ns, c.name, "resume")
    await until("the canary serviced", lambda s: s.hosts and s.hosts[0].phase == HostPhase.DONE)
    await campaigns.signal(client, ns, c.name, "abort")
    st = await asyncio.wait_for(handle.result(), timeout=300)
    assert st.phase == CampaignPhase.ABORTED, st
    done = [i for i, h in enumerate(st.hosts) if h.phase == HostPhase.DONE]
    assert st.hosts[-1].phase == HostPhase.PENDING and 0 in done, st  # the last wave never started
    assert [bios_writes(dc, i) for i in range(3)] == [[TURBO_OFF] if i in done else [] for i in range(3)]
    # nothing was started between the pause and the resume
    history = await handle.fetch_history()
    signals = {
        e.workflow_execution_signaled_event_attributes.signal_name: e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    }
    applied = scheduled(history, CAMPAIGN_APPLY)
    assert not [a for a in applied if signals["pause"] < a < signals["resume"]], (signals, applied)
