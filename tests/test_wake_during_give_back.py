"""A spec change that lands while a host gives its provisioning slot back is acted on at once.

The host's loop read its change counter only after that await (a signal to the limiter and its
acknowledgement), so an Update arriving in between was seen only at the next power check, 300 s
later: the deprovisioning flake of tests/test_lifecycle.py on loaded CI machines. Here the
give-back is held open for 3 s (unsandboxed worker, monkeypatched), so the Update lands in it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from test_lifecycle import wait_status

from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from worker.control import control_activities
from workflows import all_workflows
from workflows.host_slot import ProvisioningSlot

GIVE_BACK_HELD = 3.0


async def test_an_update_during_the_slot_give_back_is_not_missed(
    client: Client, settings: Settings, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.power_check_interval_seconds >= 120, "the check relies on the slow power check"
    real = ProvisioningSlot.give_back
    held = []

    async def slow_give_back(self: ProvisioningSlot) -> None:
        if self.held:
            held.append(workflow.info().workflow_id)
            await workflow.sleep(GIVE_BACK_HELD)
        await real(self)

    monkeypatch.setattr(ProvisioningSlot, "give_back", slow_give_back)
    async with Datacenter(settings, hosts=1, namespace=ns, prefix="wake") as dc:
        with ThreadPoolExecutor(max_workers=16) as executor:
            worker = Worker(
                client,
                task_queue=settings.task_queue,
                workflows=all_workflows(),
                activities=control_activities(),
                activity_executor=executor,
                workflow_runner=UnsandboxedWorkflowRunner(),
            )
            async with worker:
                host = dc.host(0)
                await operations.apply(client, host, settings)
                st = await wait_status(client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED)
                await operations.deprovision(client, host.ref)  # lands while the slot goes back
                assert host.ref.workflow_id in held, "the give-back was not held: the race was not staged"
                st = await wait_status(
                    client,
                    host.ref,
                    lambda s: s.provisioning.state in (S.DEPROVISIONING, S.AVAILABLE) or s.error_type,
                    timeout=60,
                )
                assert st.error_type is None, st.error_message
                await wait_status(client, host.ref, lambda s: s.provisioning.state == S.AVAILABLE)
