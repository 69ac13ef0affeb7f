"""A campaign halts at its failure budget (issue #26): the fault proxy in front of the BMC refuses
two hosts' BIOS writes mid-wave (401: credentials rejected, a permanent BMC error), their
servicing fails, and the campaign stops after that wave with the rest of the fleet untouched.
Through the real Temporal dev server and sushy-emulator; counted at the emulator's log."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from tests_support import emulator_bios_writes as bios_writes
from tests_support import wait_status

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
from worker.control import build_worker

TURBO_OFF = {"ProcTurboMode": "Disabled"}


async def test_failures_beyond_the_budget_halt_the_campaign_after_their_wave(
    client: Client, settings: Settings, ns: str
) -> None:
    async with Datacenter(settings, hosts=4, namespace=ns, image_mib=4) as dc:
        assert dc.sushy is not None
        async with FaultProxy(dc.sushy.url) as bmc:
            hosts = []
            for i in range(4):
                host = dc.host(i, labels={"rack": "r1"})
                address = f"redfish+http://127.0.0.1:{bmc.port}/redfish/v1/Systems/{dc.systems[i].uuid}"
                details = BMCDetails(address=address, credentials=dc.credentials)
                hosts.append(host.model_copy(update={"spec": host.spec.model_copy(update={"bmc": details})}))
            with ThreadPoolExecutor(max_workers=16) as executor:
                async with build_worker(client, settings, executor):
                    for host in hosts:
                        await operations.apply(client, host, settings)
                    for host in hosts:
                        st = await wait_status(
                            client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type
                        )
                        assert st.error_type is None, st.error_message
                    for i in (1, 2):  # the first wave after the canary: both refused by their BMC
                        bmc.add(
                            Rule(
                                Fault.UNAUTHORIZED, method="PATCH", path=f"{dc.systems[i].uuid}/BIOS/Settings"
                            )
                        )
                    c = Campaign(
                        name="budget",
                        namespace=ns,
                        spec=CampaignSpec(
                            selector=LabelSelector(match_labels={"rack": "r1"}),
                            change=CampaignChange(firmware_settings=TURBO_OFF),
                            canary=1,
                            max_unavailable=2,
                            failure_budget=1,
                        ),
                    )
                    handle = await campaigns.apply(client, c, settings.task_queue)
                    st = await asyncio.wait_for(handle.result(), 300)
    assert st.phase == CampaignPhase.HALTED, st
    assert st.message.startswith("2 hosts failed, over the failure budget of 1: "), st.message
    assert [(h.phase, h.wave) for h in st.hosts] == [
        (HostPhase.DONE, 0),
        (HostPhase.FAILED, 1),
        (HostPhase.FAILED, 1),
        (HostPhase.PENDING, -1),  # the last wave never started
    ], st
    assert "servicing error" in st.hosts[1].message and "rejected the credentials" in st.hosts[1].message, st
    assert [bios_writes(dc, i) for i in range(4)] == [[TURBO_OFF], [], [], []]
    assert [d.ref.name for d in st.drift] == [h.ref.name for h in st.hosts[1:]]
