"""A fleet bigger than one payload: its hosts are sent in parts (start + `hosts` signals), it
applies none before all are in, and once applied it carries and reads names only, never the
specs again (the observing activity asks the fleet for them)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from tests_support import record

from metalflow.api.errors import ErrorName
from metalflow.api.fleet import (
    FLEET_HOSTS_SIGNAL,
    FLEET_OBSERVE,
    FLEET_WORKFLOW,
    FleetHosts,
    FleetInput,
    FleetObserve,
    FleetProgress,
)
from metalflow.api.host import HOST_WORKFLOW
from metalflow.api.models import BMCDetails, ErrorType, Host, HostRef, HostSpec, SecretRef
from metalflow.client import operations
from metalflow.client.fleet import parts, start_fleet
from metalflow.runtime.settings import Settings
from worker.control import build_worker

HOSTS = f'WorkflowType="{HOST_WORKFLOW}"'


def hosts_without_credentials(ns: str, n: int, tmp_path: Path) -> list[Host]:
    """Hosts whose BMC secret file does not exist: registration fails at once, typed, so they
    settle (in error) without any BMC traffic."""
    missing = SecretRef(name="bmc", namespace=ns, path=str(tmp_path / "no-such-secret.yaml"))
    return [
        Host(
            ref=HostRef(namespace=ns, name=f"fp-{i}"),
            spec=HostSpec(
                bmc=BMCDetails(address=f"redfish://127.0.0.1:9/redfish/v1/Systems/{i}", credentials=missing),
                boot_mac_address=f"52:54:00:fa:00:{i:02x}",
                online=False,
            ),
        )
        for i in range(n)
    ]


def test_parts_stay_within_their_size_and_cover_every_host_once(tmp_path: Path) -> None:
    hosts = hosts_without_credentials("t", 9, tmp_path)
    one = len(hosts[0].model_dump_json()) + 1
    split = parts(hosts, limit=2 * one + 1)
    assert [offset for offset, _ in split] == [0, 2, 4, 6, 8]
    assert [h for _, part in split for h in part] == hosts
    assert all(sum(len(h.model_dump_json()) + 1 for h in part) <= 2 * one + 1 for _, part in split)
    assert parts(hosts[:1], limit=10) == [(0, hosts[:1])]  # a host bigger than the limit still goes
    assert parts([], limit=10) == []
    with pytest.raises(ValueError, match="total: 2 is fewer than the 3 hosts"):
        FleetInput(hosts=hosts[:3], total=2)


async def test_a_fleet_sent_in_parts_applies_every_host_and_observes_by_name(
    client: Client, settings: Settings, ns: str, tmp_path: Path
) -> None:
    hosts = hosts_without_credentials(ns, 7, tmp_path)
    part_bytes = 2 * (len(hosts[0].model_dump_json()) + 1)
    assert len(parts(hosts, part_bytes)) == 4
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(client, settings, executor):
            handle = await start_fleet(
                client,
                hosts,
                fleet_id=f"fleet/{ns}",
                task_queue=settings.task_queue,
                timeout_seconds=120,
                part_bytes=part_bytes,
            )
            # a part sent again (a client retrying a signal) places nothing twice
            await handle.signal(FLEET_HOSTS_SIGNAL, FleetHosts(offset=2, hosts=hosts[2:4]))
            result = await handle.result()
            history = await handle.fetch_history()
            await record(client, handle.id, "fleet-parts")

    assert result.total == 7 and result.settled == 7 and result.done and not result.timed_out
    assert sorted(h.name for h in result.hosts) == [h.ref.name for h in hosts]
    assert {h.error_type for h in result.failed} == {ErrorType.REGISTRATION.value}
    assert all(ErrorName.SECRET_MISSING.value in h.error_message for h in result.failed)
    started = [
        wf.id async for wf in client.list_workflows(f'{HOSTS} AND WorkflowId STARTS_WITH "host/{ns}/"')
    ]
    assert sorted(started) == [f"host/{ns}/{h.ref.name}" for h in hosts]

    events = list(history.events)
    start = events[0].workflow_execution_started_event_attributes
    first = FleetInput.model_validate_json(start.input.payloads[0].data)
    assert [h.ref.name for h in first.hosts] == ["fp-0", "fp-1"] and first.total == 7
    observed = [
        FleetObserve.model_validate_json(e.activity_task_scheduled_event_attributes.input.payloads[0].data)
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == FLEET_OBSERVE
    ]
    assert observed and all(o.members_of == handle.id and not o.names for o in observed)
    signals = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    assert len(signals) == 4  # three parts and the one sent again


async def test_a_fleet_continued_after_its_apply_watches_its_members_without_their_specs(
    client: Client, settings: Settings, ns: str, tmp_path: Path
) -> None:
    """The state continue-as-new carries once the fleet has applied: names, not specs."""
    hosts = hosts_without_credentials(ns, 3, tmp_path)
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(client, settings, executor):
            for host in hosts:
                await operations.apply(client, host, settings)
            carried = FleetInput(
                hosts=[],
                total=3,
                applied=True,
                members=[FleetObserve(namespace=ns, names=[h.ref.name for h in hosts])],
                timeout_seconds=120,
            )
            result = await client.execute_workflow(
                FLEET_WORKFLOW,
                carried,
                id=f"fleet/{ns}",
                task_queue=settings.task_queue,
                result_type=FleetProgress,
            )
    assert result.total == 3 and result.settled == 3 and len(result.failed) == 3
    assert json.dumps(carried.model_dump(mode="json")).count("redfish://") == 0


async def test_a_fleet_whose_parts_never_all_arrive_applies_none(
    client: Client, settings: Settings, ns: str, tmp_path: Path
) -> None:
    hosts = hosts_without_credentials(ns, 4, tmp_path)
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(client, settings, executor):
            with pytest.raises(WorkflowFailureError) as failed:
                await client.execute_workflow(
                    FLEET_WORKFLOW,
                    FleetInput(hosts=hosts[:2], total=4, timeout_seconds=2),
                    id=f"fleet/{ns}",
                    task_queue=settings.task_queue,
                    result_type=FleetProgress,
                )
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == ErrorName.FLEET_INCOMPLETE.value
    assert "received 2 of its 4 hosts" in str(cause) and "start the fleet again" in str(cause)
    assert [wf.id async for wf in client.list_workflows(f'WorkflowId STARTS_WITH "host/{ns}/"')] == []
