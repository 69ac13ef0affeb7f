"""Control calls fail as an ActivityError whose cause is the activity's own error (callers such
as the slot request catch ActivityError), and run as activity tasks (local activities withdrawn:
workflows/control_calls.py says why)."""

from __future__ import annotations

import uuid

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from workflows import sandbox_runner
from workflows.control_calls import control_call


@activity.defn(name="test.refuse")
def refuse(what: str) -> str:
    raise ApplicationError(f"no {what}", type="Refused", non_retryable=True)


@activity.defn(name="test.echo")
def echo(what: str) -> str:
    return what.upper()


@workflow.defn(name="ControlCallProbe")
class ControlCallProbe:
    @workflow.run
    async def run(self, activity_name: str) -> str:
        try:
            return str(
                await control_call(
                    activity_name, "slot", summary="probe", retry=RetryPolicy(maximum_attempts=2)
                )
            )
        except ActivityError as err:
            cause = err.cause
            assert isinstance(cause, ApplicationError)
            return f"ActivityError({err.activity_type}) <- {cause.type}: {cause.message}"


async def test_a_control_call_is_an_activity_task_and_fails_as_one(client: Client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    queue = f"control-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(4) as executor:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[ControlCallProbe],
            activities=[refuse, echo],
            activity_executor=executor,
            workflow_runner=sandbox_runner(),
        ):
            ok = await client.start_workflow(
                ControlCallProbe.run, "test.echo", id=f"cc-{uuid.uuid4()}", task_queue=queue
            )
            assert await ok.result() == "SLOT"
            failed = await client.execute_workflow(
                ControlCallProbe.run, "test.refuse", id=f"cc-{uuid.uuid4()}", task_queue=queue
            )
    assert failed == "ActivityError(test.refuse) <- Refused: no slot"
    events = (await ok.fetch_history()).events
    assert any(e.HasField("activity_task_scheduled_event_attributes") for e in events)
    assert not any(e.marker_recorded_event_attributes.marker_name == "core_local_activity" for e in events)
