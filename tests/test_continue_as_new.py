"""Long-lived host workflows continue-as-new at rest, carrying state, pending requests and memo."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from tests_support import patch_ids, record, step_histories

from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from worker.control import build_worker


async def test_history_is_bounded_by_continue_as_new(client: Client, settings: Settings, ns: str) -> None:
    settings = settings.model_copy(update={"history_event_limit": 60})
    async with Datacenter(settings, hosts=1, prefix="can", namespace=ns) as dc:
        host = dc.host(0)
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                await operations.apply(client, host, settings, operations.StartOptions(memo={"uid": "uid-1"}))
                handle = operations.handle_for(client, host.ref)
                first_run = (await handle.describe()).run_id
                deadline = asyncio.get_running_loop().time() + 240
                while True:
                    desc = await client.get_workflow_handle(host.ref.workflow_id).describe()
                    st = await operations.status(client, host.ref)
                    if desc.run_id != first_run and st.provisioning.state == S.PROVISIONED:
                        break
                    assert st.error_type is None, st.error_message
                    assert asyncio.get_running_loop().time() < deadline, "no continue-as-new at rest"
                    await asyncio.sleep(0.3)
                # the new run carries the host's state and the bridge's memo
                assert st.hardware is not None and st.provisioning.image == host.spec.image
                assert st.good_credentials.credentials == host.spec.bmc.credentials
                assert (await desc.memo())["uid"] == "uid-1"
                assert desc.history_length < 60
                old = client.get_workflow_handle(host.ref.workflow_id, run_id=first_run)
                assert (await old.describe()).status.name == "CONTINUED_AS_NEW"
                await record(client, host.ref.workflow_id, "continued-as-new")
                # and it still acts on the operator: deprovision in the new run
                await operations.deprovision(client, host.ref)
                deadline = asyncio.get_running_loop().time() + 240
                while (st := await operations.status(client, host.ref)).provisioning.state != S.AVAILABLE:
                    assert st.error_type is None and asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.3)
                # the new run was told it took the patches' baseline: neither it nor the steps it
                # started record a patch marker (issue 28: each costs a visibility write)
                runs = await step_histories(client, host.ref.workflow_id)
                assert len(runs) > 1 and {w: patch_ids(e) for w, e in runs.items()} == {w: [] for w in runs}
