"""A campaign survives its worker's kill -9 mid-wave and updates no host twice (issue #26).

The worker is a `metalflow worker` process (tests/fixtures/crash.py); the BMC is reached through
the fault proxy, which holds the answer to one wave host's BIOS PATCH while the worker is killed.
Counted at the emulator and at the proxy: one PATCH per host.
"""

from __future__ import annotations

import asyncio

import pytest
from fixtures.crash import Plant, until
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from tests_support import emulator_bios_writes as bios_writes

from metalflow.api.campaign import (
    Campaign,
    CampaignChange,
    CampaignPhase,
    CampaignSpec,
    HostPhase,
    LabelSelector,
)
from metalflow.api.models import BMCDetails
from metalflow.api.models import ProvisioningState as S
from metalflow.client import campaigns, operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.faultproxy import Fault, FaultProxy, Rule

RACK = {"rack": "r1"}
TURBO_OFF = {"ProcTurboMode": "Disabled"}


@pytest.fixture
def crash_hosts() -> int:
    return 2  # the canary, then a wave of one: the host whose PATCH answer is held


async def test_a_worker_killed_mid_wave_resumes_and_updates_no_host_twice(
    world: tuple[Plant, Client, Datacenter, FaultProxy, FaultProxy],
) -> None:
    the_plant, client, dc, bmc, _ = world
    settings = Settings()
    hosts = []
    for i in range(2):
        host = dc.host(i, labels=RACK)
        address = f"redfish+http://127.0.0.1:{bmc.port}/redfish/v1/Systems/{dc.systems[i].uuid}"
        bmc_details = BMCDetails(address=address, credentials=dc.credentials)
        hosts.append(host.model_copy(update={"spec": host.spec.model_copy(update={"bmc": bmc_details})}))
    for host in hosts:
        await operations.apply(client, host, settings)

    async def provisioned() -> bool:
        sts = [await operations.status(client, h.ref) for h in hosts]
        assert all(st.error_type is None for st in sts), [st.error_message for st in sts]
        return all(st.provisioning.state == S.PROVISIONED for st in sts)

    await until("both hosts provisioned", provisioned, timeout=240)
    # the wave's first host: its PATCH reaches the BMC, the answer is held, the worker dies
    bmc.add(Rule(Fault.HOLD_RESPONSE, method="PATCH", path=f"{dc.systems[1].uuid}/BIOS/Settings", times=1))
    c = Campaign(
        name="turbo-off",
        namespace=hosts[0].ref.namespace,
        spec=CampaignSpec(
            selector=LabelSelector(match_labels=RACK),
            change=CampaignChange(firmware_settings=TURBO_OFF),
            canary=1,
            max_unavailable=1,
        ),
    )
    handle = await campaigns.apply(client, c, settings.task_queue)

    async def held() -> bool:
        return bmc.held == 1

    await until("the wave host's BIOS PATCH answer held in flight", held, timeout=240)
    the_plant.kill_worker()
    the_plant.start_worker()
    bmc.release()
    st = await asyncio.wait_for(handle.result(), timeout=300)
    assert st.phase == CampaignPhase.SUCCEEDED and st.count(HostPhase.DONE) == 2, st
    assert [bios_writes(dc, i) for i in range(2)] == [[TURBO_OFF]] * 2, "a host was written twice"
    assert bmc.count("PATCH", "BIOS/Settings") == 2
    history = await handle.fetch_history()
    reboots = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    ]
    assert len(reboots) == 2, "a host was asked to reboot twice"
