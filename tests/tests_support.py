"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import TypeAdapter
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from metalflow.api.agent import AgentReply

HISTORIES = Path(__file__).parent / "histories"
T = TypeVar("T")


def distribution_name(requirement: str) -> str:
    """The normalized (PEP 503) distribution a requirement names: "Sushy_Tools>=2" -> "sushy-tools"."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]).lower()


def make_ca() -> bytes:
    """A self-signed cluster CA certificate (PEM), like kubeadm's ca.crt."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def malformed_yaml() -> str:
    """cloud-config whose fault (line 7) sits on a secret line: PyYAML's message would quote it."""
    return (
        "#cloud-config\n"
        "chpasswd:\n"
        "  list: |\n"
        f"    root:root-password-{uuid.uuid4().hex}\n"
        "users:\n"
        "  - name: ops\n"
        f"    passwd: ops-password-hash-{uuid.uuid4().hex}: [oops\n"
    )


async def record(client: Client, workflow_id: str, name: str) -> None:
    """Keep this run's histories (the host's and its steps') for the replay test, when asked to;
    METALFLOW_RECORD_SUFFIX names a new set (a new code path) beside the histories kept."""
    if not os.environ.get("METALFLOW_RECORD_HISTORIES"):
        return
    name += os.environ.get("METALFLOW_RECORD_SUFFIX", "")
    async for wf in client.list_workflows(f'WorkflowId STARTS_WITH "{workflow_id}"'):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        step = "" if wf.id == workflow_id else "-" + wf.id.rsplit("/", 1)[-1]
        doc = {"workflowId": wf.id, "history": json.loads(history.to_json())}
        (HISTORIES / f"{wf.workflow_type}-{name}{step}.json").write_text(json.dumps(doc))


@dataclass
class ActivityRun:
    """One scheduled activity as its history tells it (retries are one run, `attempt` the last)."""

    workflow_id: str
    name: str
    attempt: int = 0
    outcome: str = "pending"  # completed | failed | timed_out | pending
    retry_state: int = 0
    maximum_attempts: int = 0
    backoff: float = 0.0
    failure: str = ""


def patch_ids(events: list[HistoryEvent]) -> list[str]:
    """The patches a history recorded, in order (`workflow.patched()` markers, named by the SDK
    core "core_patch" with the id in their `patch-data`)."""
    return [
        json.loads(m.details["patch-data"].payloads[0].data)["id"]
        for m in (
            e.marker_recorded_event_attributes
            for e in events
            if e.HasField("marker_recorded_event_attributes")
        )
        if m.marker_name == "core_patch"
    ]


async def step_histories(client: Client, workflow_id: str) -> dict[str, list[HistoryEvent]]:
    """A host's history and its step children's (found through the host's own events, so no
    visibility lag), keyed by workflow id in start order."""
    out: dict[str, list[HistoryEvent]] = {}
    pending = [(workflow_id, None)]
    while pending:
        wid, run_id = pending.pop(0)
        events = [e async for e in client.get_workflow_handle(wid, run_id=run_id).fetch_history_events()]
        out[wid] = events
        for e in events:
            if e.HasField("child_workflow_execution_started_event_attributes"):
                ex = e.child_workflow_execution_started_event_attributes.workflow_execution
                pending.append((ex.workflow_id, ex.run_id))
    return out


async def at_rest(client: Client, workflow_id: str) -> bool:
    """Nothing of the workflow is in flight at the server: no workflow task, activity or child.

    A query answers from the worker's state, which can be ahead of the history: a host can
    report its new state while the workflow task that made the change (and schedules the
    `status.publish` for it) is still being completed. A test that reads histories after a
    query waits for this too, or it may read an activity that is still running."""
    desc = (await client.get_workflow_handle(workflow_id).describe()).raw_description
    return not (desc.HasField("pending_workflow_task") or desc.pending_activities or desc.pending_children)


async def backing_off(client: Client, workflow_id: str, timeout: float = 60) -> None:
    """Wait until a host that reported an error waits out its back-off (nothing in flight), so a
    `retry` signal sent now counts. The status query shows the error as soon as the workflow
    records it, while the failure's status.publish still runs; a retry signalled in that window
    is dropped (the back-off wait resets the flag after the publish) and the host sits out its
    30 s+ back-off instead: how long depends on the machine's load."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await at_rest(client, workflow_id):
        assert asyncio.get_running_loop().time() < deadline, f"{workflow_id} still busy after {timeout:.0f}s"
        await asyncio.sleep(0.1)


def activity_runs(histories: dict[str, list[HistoryEvent]]) -> list[ActivityRun]:
    runs: list[ActivityRun] = []
    for wid, events in histories.items():
        by_id: dict[int, ActivityRun] = {}
        for e in events:
            if e.HasField("activity_task_scheduled_event_attributes"):
                a = e.activity_task_scheduled_event_attributes
                run = ActivityRun(
                    wid,
                    a.activity_type.name,
                    maximum_attempts=a.retry_policy.maximum_attempts,
                    backoff=a.retry_policy.backoff_coefficient,
                )
                by_id[e.event_id] = run
                runs.append(run)
            elif e.HasField("activity_task_started_event_attributes"):
                a2 = e.activity_task_started_event_attributes
                by_id[a2.scheduled_event_id].attempt = a2.attempt
            elif e.HasField("activity_task_completed_event_attributes"):
                by_id[e.activity_task_completed_event_attributes.scheduled_event_id].outcome = "completed"
            elif e.HasField("activity_task_failed_event_attributes"):
                a3 = e.activity_task_failed_event_attributes
                run = by_id[a3.scheduled_event_id]
                run.outcome, run.retry_state, run.failure = "failed", a3.retry_state, a3.failure.message
            elif e.HasField("activity_task_timed_out_event_attributes"):
                by_id[e.activity_task_timed_out_event_attributes.scheduled_event_id].outcome = "timed_out"
            elif local := local_activity(e):  # one marker per local activity, its retries inside
                m = e.marker_recorded_event_attributes
                run = ActivityRun(wid, local["activity_type"], attempt=local["attempt"], outcome="completed")
                if m.HasField("failure"):
                    run.outcome, run.failure = "failed", m.failure.message
                runs.append(run)
    return runs


def local_activity(e: HistoryEvent) -> dict[str, Any]:
    """What a local activity's marker says of it (activity_type, attempt, ...); {} for other events."""
    m = e.marker_recorded_event_attributes
    if not e.HasField("marker_recorded_event_attributes") or m.marker_name != "core_local_activity":
        return {}
    data: dict[str, Any] = json.loads(m.details["data"].payloads[0].data)
    return data


def activity_results(histories: dict[str, list[HistoryEvent]], name: str, result_type: type[T]) -> list[T]:
    """The decoded result of every completed run of activity `name`, in history order."""
    out: list[T] = []
    for events in histories.values():
        scheduled = {
            e.event_id
            for e in events
            if e.activity_task_scheduled_event_attributes.activity_type.name == name
        }
        for e in events:
            details = e.marker_recorded_event_attributes.details
            if local_activity(e).get("activity_type") == name and "result" in details:
                payload = details["result"].payloads[0]
                out.append(pydantic_data_converter.payload_converter.from_payload(payload, result_type))
            elif e.activity_task_completed_event_attributes.scheduled_event_id in scheduled:
                payload = e.activity_task_completed_event_attributes.result.payloads[0]
                if name.startswith("agent."):  # the agent's replies come proved: the result inside
                    reply = pydantic_data_converter.payload_converter.from_payload(payload, AgentReply)
                    out.append(TypeAdapter(result_type).validate_python(reply.result))
                    continue
                out.append(pydantic_data_converter.payload_converter.from_payload(payload, result_type))
    return out


def workflow_workers(histories: dict[str, list[HistoryEvent]]) -> set[str]:
    """The identities (pid@host) of the workers whose workflow tasks the histories record."""
    return {
        e.workflow_task_completed_event_attributes.identity
        for events in histories.values()
        for e in events
        if e.HasField("workflow_task_completed_event_attributes")
    }


async def eventually(fn: Callable[[], Any], what: str, timeout: float = 180) -> Any:
    """Poll a blocking read until it returns something truthy; fail naming WHAT and the last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await asyncio.to_thread(fn)
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: last {got!r}")
        await asyncio.sleep(0.3)


async def workflow_paused(settings: Any, ref: Any) -> bool:
    """Whether the host's workflow says it is paused (a client of its own: called in a thread)."""
    from metalflow.client import operations
    from metalflow.runtime.temporal import connect

    return (await operations.status(await connect(settings), ref)).paused


async def wait_status(client: Client, ref: Any, pred: Callable[[Any], Any], timeout: float = 240) -> Any:
    """Poll the host's status Query until PRED holds; fail with the last status."""
    from metalflow.client import operations

    deadline = asyncio.get_running_loop().time() + timeout
    while not pred(st := await operations.status(client, ref)):
        assert asyncio.get_running_loop().time() < deadline, f"not reached; last: {st.model_dump_json()}"
        await asyncio.sleep(0.3)
    return st


async def child_steps(client: Client, workflow_id: str) -> list[str]:
    """The step workflows a host's workflow started, in order, read from its history."""
    from temporalio.api.enums.v1 import EventType

    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    ]


def emulator_bios(dc: Any, index: int, pending: bool = False) -> dict[str, Any]:
    """A Datacenter system's current (or pending) BIOS attributes, read as a Redfish client would."""
    import requests

    url = dc.sushy.system_url(dc.systems[index].uuid) + ("/BIOS/Settings" if pending else "/BIOS")
    r = requests.get(url, auth=("admin", dc.password), timeout=10)
    r.raise_for_status()
    attributes: dict[str, Any] = r.json()["Attributes"]
    return attributes


def emulator_bios_writes(dc: Any, index: int) -> list[dict[str, Any]]:
    """Every BIOS PATCH the emulator took for one Datacenter system, from its log
    (testbed/sushy_bios.py logs each)."""
    marker = f"metalflow-testbed: BIOS PATCH {dc.systems[index].uuid} "
    log = dc.sushy.process.log_path.read_text()
    return [json.loads(line.split(marker, 1)[1]) for line in log.splitlines() if marker in line]
