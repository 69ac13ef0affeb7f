"""A host enrolled without a MAC through the whole lifecycle, on the real Temporal dev server,
sushy-emulator (its Redfish System `UUID`) and an emulated server whose agent reports the NIC
it booted from; a second host claiming the same machine, and a UUID that changed, fail typed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor
from test_lifecycle import wait_status
from tests_support import record

from activities.boot import by_uuid, dnsmasq
from metalflow.api.boot import BOOT_PREPARE, BootPrepareRequest
from metalflow.api.host import REGISTER_HOST, StepInput, StepResult
from metalflow.api.models import ErrorType
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from worker.control import build_worker


class BootPrepares(Interceptor):
    """Records every boot.prepare request the worker runs (a local activity: not in history)."""

    def __init__(self) -> None:
        self.seen: list[BootPrepareRequest] = []

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        seen = self.seen

        class Record(ActivityInboundInterceptor):
            async def execute_activity(self, input: ExecuteActivityInput) -> Any:
                if activity.info().activity_type == BOOT_PREPARE:
                    seen.append(input.args[0])
                return await super().execute_activity(input)

        return Record(next)


PREPARES = BootPrepares()


@pytest_asyncio.fixture
async def dc(client: Client, settings: Settings, ns: str) -> AsyncIterator[Datacenter]:
    PREPARES.seen.clear()
    async with Datacenter(settings, hosts=2, namespace=ns) as datacenter:
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor, interceptors=[PREPARES]):
                yield datacenter


def boot_prepares(host: str) -> list[BootPrepareRequest]:
    """The boot.prepare requests the host's steps made, in order."""
    return [r for r in PREPARES.seen if r.host.name == host]


async def test_host_without_mac_is_found_by_uuid_and_learns_its_mac(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    host = dc.host(0, boot_mac_address=None)
    system = dc.systems[0]
    await operations.apply(client, host, settings)
    st = await wait_status(client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type)
    assert st.error_type is None, st.error_message
    # registration recorded the Redfish System's UUID; the first boot was prepared under it
    assert st.system_uuid == system.uuid
    # (the script itself went with the deploy's boot cleanup; the claim stays)
    assert by_uuid.claim_path(settings.boot_dir, system.uuid).read_text() == host.ref.host_id
    # inspection learnt the MAC that booted; metal3 shows it in status (nics[].pxe), spec unchanged
    assert st.hardware is not None
    assert [n.mac for n in st.hardware.nics if n.pxe] == [system.mac]
    assert (await operations.spec(client, host.ref)).boot_mac_address is None

    # from then on it is handled as a host enrolled with that MAC: deprovisioning boots the
    # ramdisk again, and this time dnsmasq gets a host entry and the per-MAC script is written
    await operations.deprovision(client, host.ref)
    st = await wait_status(client, host.ref, lambda s: s.provisioning.state == S.AVAILABLE or s.error_type)
    assert st.error_type is None, st.error_message
    assert dc.emulated[0].boots[-1].target == "Pxe"
    prepared = boot_prepares(host.ref.name)
    assert [(p.boot_mac_address, p.system_uuid) for p in prepared] == [
        (None, system.uuid),  # inspection: by UUID
        (system.mac, ""),  # deprovisioning's clean: by the learnt MAC
    ]
    # cleanup after deprovisioning removed the host's boot files; its UUID claim stays while
    # the host exists
    assert not (dnsmasq.hosts_dir(settings) / host.ref.host_id).exists()
    assert not by_uuid.script_path(settings.boot_dir, system.uuid).exists()
    assert by_uuid.claim_path(settings.boot_dir, system.uuid).read_text() == host.ref.host_id

    # a second BareMetalHost pointing at the same machine claims its UUID: a typed error
    twin = dc.host(1, boot_mac_address=None, bmc=host.spec.bmc)
    await operations.apply(client, twin, settings)
    st = await wait_status(client, twin.ref, lambda s: s.error_type is not None)
    assert st.error_type == ErrorType.INSPECTION
    assert "DuplicateSystemUUID" in st.error_message or "already claimed" in st.error_message
    assert system.uuid in st.error_message and host.ref.host_id in st.error_message
    assert not dc.emulated[1].boots, "the twin must not power anything on"

    # deleting the first host frees the machine's UUID for whichever host is that machine
    await operations.signal(client, host.ref, "delete")
    final = await asyncio.wait_for(operations.handle_for(client, host.ref).result(), 300)
    assert final.deleted and final.error_type is None, final.error_message
    assert not by_uuid.claim_path(settings.boot_dir, system.uuid).exists()
    await record(client, host.ref.workflow_id, "macless")


async def test_registration_refuses_a_uuid_that_changed(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    host = dc.host(1, boot_mac_address=None)
    recorded = str(uuid.uuid4())
    with pytest.raises(WorkflowFailureError) as err:
        await client.execute_workflow(
            REGISTER_HOST,
            StepInput(ref=host.ref, spec=host.spec, system_uuid=recorded),
            id=f"register-changed-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
            result_type=StepResult,
        )
    cause = err.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "SystemUUIDChanged", cause
    assert dc.systems[1].uuid in cause.message and recorded in cause.message
    # the same UUID registers fine
    ok = await client.execute_workflow(
        REGISTER_HOST,
        StepInput(ref=host.ref, spec=host.spec, system_uuid=dc.systems[1].uuid),
        id=f"register-same-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
        result_type=StepResult,
    )
    assert ok.system_uuid == dc.systems[1].uuid
