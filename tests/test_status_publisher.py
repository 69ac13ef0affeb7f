"""HostWorkflow publishes BareMetalHost.status in the background (workflows/host_publish.py):
the writes go out in order, one at a time, a newer status replacing one still waiting, and every
status published before the run ends is written. A write that fails is tried again, and never
fails the host; a host with no BareMetalHost writes nothing. Against the dev server, with the
publish activity recording what it was given."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from metalflow.api.host import STATUS_PUBLISH, StatusUpdate
from metalflow.api.models import HostRef, HostSpec, HostStatus
from metalflow.api.models import ProvisioningState as S
from workflows import sandbox_runner
from workflows.host_publish import StatusPublisher

SPEC = {"bmc": {"address": "redfish://127.0.0.1:1/redfish/v1/Systems/1", "credentials": {"name": "bmc"}}}


class Writes:
    """What the fake status activity was asked to write; it refuses the first write of `refuse`."""

    def __init__(self, refuse: str = "") -> None:
        self.states: list[str] = []
        self.refuse = refuse
        self.lock = threading.Lock()
        self.history: WorkflowHistory | None = None  # the probe's, once it has run

    def mirrored(self) -> tuple[int, int]:
        """The probe's search attribute upserts of the host's state, and its memo changes."""
        assert self.history is not None
        events = self.history.events
        upserts = sum(
            "HostState"
            in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            for e in events
            if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        )
        memos = sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED for e in events)
        return upserts, memos

    def activity(self):  # type: ignore[no-untyped-def]
        @activity.defn(name=STATUS_PUBLISH)
        def publish_status(update: StatusUpdate) -> None:
            state = update.status.provisioning.state.value
            with self.lock:
                self.states.append(f"{state}/{update.status.current_step}")
                if state == self.refuse:
                    self.refuse = ""
                    raise ApplicationError("the API server is away", non_retryable=True)

        return publish_status


@workflow.defn(name="StatusPublisherProbe")
class StatusPublisherProbe:
    @workflow.run
    async def run(self, steps: list[tuple[str, str]]) -> str:
        publisher = StatusPublisher(HostRef(namespace="t", name="probe"), retry_after=timedelta(seconds=1))
        spec = HostSpec.model_validate(SPEC)
        status = HostStatus()
        for state, step in steps:  # no await between them: one workflow task publishes them all
            status.provisioning.state, status.current_step = S(state), step
            await publisher.publish(spec, status, False, False)
        status.provisioning.state = S.PROVISIONED  # changed after the last publish: not written
        await publisher.flush()
        return "done"


async def _run(client: Client, writes: Writes, steps: list[tuple[str, str]], uid: str = "bmh-uid") -> str:
    """Run the probe; `uid` as the bridge tags a host started for a BareMetalHost ("": a script's)."""
    queue = f"publish-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(4) as executor:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[StatusPublisherProbe],
            activities=[writes.activity()],
            activity_executor=executor,
            workflow_runner=sandbox_runner(),
        ):
            handle = await client.start_workflow(
                StatusPublisherProbe.run,
                steps,
                id=f"publish-{uuid.uuid4()}",
                task_queue=queue,
                execution_timeout=timedelta(seconds=60),
                memo={"uid": uid} if uid else None,
            )
            result = str(await handle.result())
            writes.history = await handle.fetch_history()
            return result


async def test_every_state_is_written_in_order_and_a_newer_status_of_the_same_state_replaces_one_waiting(
    client: Client,
) -> None:
    writes = Writes()
    steps = [
        (S.REGISTERING.value, ""),
        (S.REGISTERING.value, "RegisterHost"),
        (S.INSPECTING.value, ""),
        (S.INSPECTING.value, "InspectHost"),
        (S.PREPARING.value, ""),
        (S.AVAILABLE.value, ""),
    ]
    assert await _run(client, writes, steps) == "done"
    assert writes.states == ["registering/RegisterHost", "inspecting/InspectHost", "preparing/", "available/"]
    # six publishes in one workflow task: the search attributes and memo upserted once, as of the last
    assert writes.mirrored() == (1, 1)


async def test_a_failed_write_is_tried_again_and_does_not_fail_the_host(client: Client) -> None:
    writes = Writes(refuse=S.INSPECTING.value)
    assert await _run(client, writes, [(S.INSPECTING.value, "InspectHost")]) == "done"
    assert writes.states == ["inspecting/InspectHost", "inspecting/InspectHost"]


async def test_a_host_without_a_baremetalhost_writes_no_status(client: Client) -> None:
    """A script's or a fleet's host: its status is its query, memo and search attributes; a
    write would be an activity task (and a workflow task) per state with nothing to write to."""
    writes = Writes()
    steps = [
        (S.REGISTERING.value, "RegisterHost"),
        (S.INSPECTING.value, "InspectHost"),
        (S.AVAILABLE.value, ""),
    ]
    assert await _run(client, writes, steps, uid="") == "done"
    assert writes.states == []
