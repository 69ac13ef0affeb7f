"""The history scanner can fail: secrets planted in every place a payload lands are found, each
named by its event and field, while the old `secret not in history.to_json()` check misses them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
import yaml
from history_scan import (
    _base64_forms,
    failure_of,
    find_in_value,
    histories_of,
    needles,
    scan_histories,
    scan_message,
)
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from tests_support import malformed_yaml

from metalflow.api.search_attributes import HOST_NAME

ONCE = RetryPolicy(maximum_attempts=1)


class Planter:
    """Activities that put one secret each into a result, a heartbeat and a failure's details."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets

    @activity.defn(name="plant.result")
    async def result(self) -> dict[str, str]:
        return {"note": self.secrets["result"]}

    @activity.defn(name="plant.heartbeat")
    async def heartbeat(self) -> None:
        activity.heartbeat({"progress": self.secrets["heartbeat"]})
        await asyncio.Event().wait()  # stop heartbeating: the heartbeat timeout records the details

    @activity.defn(name="plant.fail")
    async def fail(self) -> None:
        raise ApplicationError("planted failure", {"detail": self.secrets["failure"]}, non_retryable=True)


@workflow.defn(name="PlantSecrets", sandboxed=False)
class PlantSecrets:
    def __init__(self) -> None:
        self._signalled = False

    @workflow.signal
    def note(self, _: str) -> None:
        self._signalled = True

    @workflow.update
    def confirm(self, _: str) -> str:
        return "ok"

    @workflow.run
    async def run(self, _: str) -> None:
        await workflow.wait_condition(lambda: self._signalled)
        await workflow.execute_activity("plant.result", start_to_close_timeout=timedelta(seconds=30))
        try:
            await workflow.execute_activity(
                "plant.heartbeat",
                start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=timedelta(seconds=1),
                retry_policy=ONCE,
            )
        except ActivityError:
            pass  # timed out, as planned
        await workflow.execute_activity("plant.fail", start_to_close_timeout=timedelta(seconds=30))


# where each planted secret must be found: (event type, field path prefix)
WHERE = {
    "input": [
        ("WORKFLOW_EXECUTION_STARTED", "workflow_execution_started_event_attributes.input.payloads[0]")
    ],
    "memo": [
        ("WORKFLOW_EXECUTION_STARTED", "workflow_execution_started_event_attributes.memo.fields['note']")
    ],
    "search attribute": [
        (
            "WORKFLOW_EXECUTION_STARTED",
            "workflow_execution_started_event_attributes.search_attributes.indexed_fields['HostName']",
        )
    ],
    "signal": [
        ("WORKFLOW_EXECUTION_SIGNALED", "workflow_execution_signaled_event_attributes.input.payloads[0]")
    ],
    "update": [
        (
            "WORKFLOW_EXECUTION_UPDATE_ACCEPTED",
            "workflow_execution_update_accepted_event_attributes.accepted_request.input.args.payloads[0]",
        )
    ],
    "result": [
        ("ACTIVITY_TASK_COMPLETED", "activity_task_completed_event_attributes.result.payloads[0]#.note")
    ],
    "heartbeat": [
        (
            "ACTIVITY_TASK_TIMED_OUT",
            "activity_task_timed_out_event_attributes.failure.timeout_failure_info.last_heartbeat_details"
            ".payloads[0]#.progress",
        )
    ],
    "failure": [
        (
            "ACTIVITY_TASK_FAILED",
            "activity_task_failed_event_attributes.failure.application_failure_info.details.payloads[0]#.detail",
        ),
        (  # nested: the workflow failed with the activity's failure as its cause
            "WORKFLOW_EXECUTION_FAILED",
            "workflow_execution_failed_event_attributes.failure.cause.application_failure_info.details"
            ".payloads[0]#.detail",
        ),
    ],
}


async def test_planted_secrets_are_found_with_their_event_and_field(client: Client) -> None:
    secrets = {where: f"planted-{where.replace(' ', '-')}-{uuid.uuid4().hex}" for where in WHERE}
    queue = f"plant-{uuid.uuid4().hex[:8]}"
    wid = f"plant/{uuid.uuid4().hex[:8]}"
    planter = Planter(secrets)
    async with Worker(
        client,
        task_queue=queue,
        workflows=[PlantSecrets],
        activities=[planter.result, planter.heartbeat, planter.fail],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await client.start_workflow(
            PlantSecrets.run,
            secrets["input"],
            id=wid,
            task_queue=queue,
            memo={"note": secrets["memo"]},
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(HOST_NAME, secrets["search attribute"])]
            ),
        )
        assert await handle.execute_update(PlantSecrets.confirm, secrets["update"]) == "ok"
        await handle.signal(PlantSecrets.note, secrets["signal"])
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 60)

    histories = await histories_of(client, wid)
    found = {
        (f.secret, f.event_type.removeprefix("EVENT_TYPE_"), f.field)
        for f in scan_histories(histories, list(secrets.values()))
    }
    for where, expected in WHERE.items():
        for event_type, field in expected:
            assert (secrets[where], event_type, field) in found, (where, sorted(found))
    assert len(found) == sum(map(len, WHERE.values())), "each secret only where it was planted"

    # the old check: every one of these hides in base64 from a substring test on to_json()
    text = (await handle.fetch_history()).to_json()
    assert [where for where, secret in secrets.items() if secret in text] == []


def test_multi_line_secrets_are_searched_line_by_line() -> None:
    user_data = "#cloud-config\npassword: hunter2-topsecret\nruncmd:\n  - ls\n"
    assert needles(user_data) == [user_data, "password: hunter2-topsecret"]


def test_a_line_quoted_cut_short_is_found() -> None:
    """PyYAML's error quotes the faulty line cut to fit ("... <tail of the line>"): the very leak
    the typed SecretMalformedYAML error prevents."""
    text = malformed_yaml()
    with pytest.raises(yaml.YAMLError) as err:
        yaml.safe_load(text)
    assert text.splitlines()[-1].strip() not in str(err.value), "quoted cut short, not whole"
    assert find_in_value(str(err.value), [text]) == [("$", text.splitlines()[-1].strip())]


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab"])
def test_a_base64_encoded_secret_is_found_at_any_alignment(prefix: bytes) -> None:
    import base64

    encoded = base64.b64encode(prefix + b"password: hunter2-topsecret" + b"tail").decode()
    assert any(form in encoded for form in _base64_forms("password: hunter2-topsecret"))


def test_a_secret_in_a_failure_cause_or_its_encoded_attributes_is_found() -> None:
    """Failures nest (cause) and may carry message and stack trace as an encoded payload."""
    secret = f"planted-cause-{uuid.uuid4().hex}"
    try:
        try:
            raise ValueError(f"could not parse: {secret}")
        except ValueError as inner:
            raise ApplicationError("step failed", type="Outer") from inner
    except ApplicationError as err:
        outer = err
    assert scan_message(failure_of(outer), [secret]) == [("cause.message", secret)]
    assert scan_message(failure_of(outer, encode_common_attributes=True), [secret]) == [
        ("cause.encoded_attributes#.message", secret)
    ]
