"""A retry sent as soon as a host shows its error counts (workflows/host.py, RETRY_PATCH).

The status query shows the error once the workflow records it, while the error's status.publish
still runs; the retry flag used to be reset after that publish, so a retry sent in between was
lost and the host sat out its 30 s back-off. The publish is held here until the retry is in."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker
from test_lifecycle import wait_status
from tests_support import record

from metalflow.api.host import STATUS_PUBLISH, StatusUpdate
from metalflow.api.models import BMCDetails, ErrorType, SecretRef
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from worker.control import control_activities
from workflows import all_workflows, sandbox_runner


async def test_a_retry_sent_while_the_error_is_published_is_not_lost(
    client: Client, settings: Settings, ns: str, tmp_path: Path
) -> None:
    held, release = threading.Event(), threading.Event()

    @activity.defn(name=STATUS_PUBLISH)
    def held_publish(update: StatusUpdate) -> None:
        if update.status.error_type is not None and not release.is_set():
            held.set()
            release.wait(60)

    activities = [
        a for a in control_activities() if getattr(a, "__temporal_activity_definition").name != STATUS_PUBLISH
    ]
    missing = SecretRef(name="nope", namespace=ns, path=str(tmp_path / "missing.yaml"))
    async with Datacenter(settings, hosts=1, namespace=ns, prefix="race") as dc:
        with ThreadPoolExecutor(max_workers=16) as executor:
            worker = Worker(
                client,
                task_queue=settings.task_queue,
                workflows=all_workflows(),
                activities=[*activities, held_publish],
                activity_executor=executor,
                workflow_runner=sandbox_runner(),
            )
            async with worker:
                host = dc.host(0, bmc=BMCDetails(address=dc.host(0).spec.bmc.address, credentials=missing))
                # as the bridge starts it: for a BareMetalHost (its uid), so its status is written
                await operations.apply(client, host, settings, operations.StartOptions(memo={"uid": "bmh"}))
                st = await wait_status(client, host.ref, lambda s: s.error_type is not None)
                assert st.error_type == ErrorType.REGISTRATION and st.error_count == 1
                assert await asyncio.to_thread(held.wait, 30), "the error's publish was not held"
                await operations.signal(client, host.ref, "retry")  # the operator saw the error
                release.set()
                # the retry counts: registration is tried again now (and fails again: the Secret is
                # still missing), not after the 30 s back-off
                st = await wait_status(client, host.ref, lambda s: s.error_count >= 2, timeout=15)
                assert st.error_type == ErrorType.REGISTRATION
                await record(client, host.ref.workflow_id, "retry-during-error-publish")
