"""The test bed's SimpleUpdate runs as a Redfish Task (testbed/sushy_tasks.py), as on a real BMC:
202 and a Running Task recording the request, the BiosVersion bumped once when the Task completes
(not at the POST), a `.fail` image ending in Exception, Tasks kept across an emulator restart, and
sushy's UpdateService/TaskMonitor flow working against it. Against the real emulator (fake driver)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import sushy

from testbed.processes import wait_for
from testbed.sushy import FakeSystem, SushyEmulator, start_sushy

AUTH = ("admin", "tasks-pw")
SECONDS = 2  # how long the module emulator's Tasks run: long enough to see one Running
SIMPLE_UPDATE = "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate"
TASKS = "/redfish/v1/TaskService/Tasks"


def _system(n: int) -> FakeSystem:
    return FakeSystem(f"0f2b2e1c-0000-4000-8000-0000000002{n:02x}", f"tasks-{n}", f"52:54:00:aa:02:{n:02x}")


SYSTEMS = [_system(n) for n in range(10)]


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SushyEmulator]:
    """One emulator for the module; each test updates systems of its own."""
    e = start_sushy(
        tmp_path_factory.mktemp("sushy-tasks"), SYSTEMS, *AUTH, power_delay=(1, 1), update_seconds=SECONDS
    )
    yield e
    e.stop()


def get(emu: SushyEmulator, path: str) -> requests.Response:
    return requests.get(emu.url + path, auth=AUTH, timeout=10)


def update(emu: SushyEmulator, image: str, *uuids: str) -> requests.Response:
    targets = [f"/redfish/v1/Systems/{u}" for u in uuids]
    return requests.post(
        emu.url + SIMPLE_UPDATE, json={"ImageURI": image, "Targets": targets}, auth=AUTH, timeout=10
    )


def bios_version(emu: SushyEmulator, uuid: str) -> str:
    return str(get(emu, f"/redfish/v1/Systems/{uuid}").json()["BiosVersion"])


def task(emu: SushyEmulator, uri: str) -> tuple[int, dict[str, Any]]:
    r = get(emu, uri)
    body: dict[str, Any] = r.json()
    return r.status_code, body


def wait_ended(emu: SushyEmulator, uri: str) -> dict[str, Any]:
    """The Task once it ended (its GET answers 200), polled as a client would."""
    wait_for(lambda: task(emu, uri)[0] == 200, 20, f"{uri} to end", interval=0.05)
    return task(emu, uri)[1]


def log_lines(emu: SushyEmulator, uuid: str) -> list[str]:
    marker = f"metalflow-testbed: SimpleUpdate {uuid} "
    text = emu.process.log_path.read_text()
    return [line.split(marker, 1)[1] for line in text.splitlines() if marker in line]


def members(emu: SushyEmulator) -> list[str]:
    body = get(emu, TASKS).json()
    assert body["Members@odata.count"] == len(body["Members"])
    return [m["@odata.id"] for m in body["Members"]]


def test_an_update_runs_as_a_task_and_bumps_the_version_only_when_it_completes(emu: SushyEmulator) -> None:
    uuid = SYSTEMS[0].uuid
    image = "http://127.0.0.1:9/bios-1.1.bin"
    r = update(emu, image, uuid)
    assert r.status_code == 202, r.text
    uri = r.headers["Location"]
    assert uri.startswith(TASKS + "/") and uri.rsplit("/", 1)[1].isdigit()
    started = r.json()
    assert started["@odata.id"] == uri and started["Id"] == uri.rsplit("/", 1)[1]
    assert started["@odata.type"] == "#Task.v1_4_3.Task"
    assert (started["TaskState"], started["TaskStatus"], started["Messages"]) == ("Running", "OK", [])
    assert 0 <= started["PercentComplete"] < 100 and started["StartTime"] and "EndTime" not in started
    payload = started["Payload"]
    assert payload["TargetUri"] == SIMPLE_UPDATE and payload["HttpOperation"] == "POST"
    assert payload["HttpHeaders"] == []
    assert json.loads(payload["JsonBody"]) == {"ImageURI": image, "Targets": [f"/redfish/v1/Systems/{uuid}"]}

    status, running = task(emu, uri)
    assert (status, running["TaskState"]) == (202, "Running")
    assert bios_version(emu, uuid) == "1.0.0"  # not at the POST

    def ended_and_never_early() -> bool:
        version = bios_version(emu, uuid)  # read before the Task: a bump must not precede its end
        status, body = task(emu, uri)
        assert body["TaskState"] == "Completed" or version == "1.0.0", "version bumped while Running"
        return status == 200

    wait_for(ended_and_never_early, 20, "the update Task to end", interval=0.05)
    done = task(emu, uri)[1]
    assert (done["TaskState"], done["TaskStatus"], done["PercentComplete"]) == ("Completed", "OK", 100)
    assert done["EndTime"] >= done["StartTime"] and done["Payload"] == payload
    assert [m["MessageId"] for m in done["Messages"]] == ["Update.1.0.UpdateSuccessful"]
    assert [bios_version(emu, uuid) for _ in range(3)] == ["1.1.0"] * 3  # bumped once
    assert task(emu, uri)[1]["TaskState"] == "Completed"
    assert log_lines(emu, uuid) == [image]


def test_concurrent_first_reads_after_the_deadline_bump_once(emu: SushyEmulator) -> None:
    uuid = SYSTEMS[1].uuid
    posted = time.time()
    uri = update(emu, "http://127.0.0.1:9/bios.bin", uuid).headers["Location"]
    # nothing reads the emulator until the Task is due: the concurrent reads below settle it
    wait_for(lambda: time.time() > posted + SECONDS + 0.5, SECONDS + 5, "the deadline")

    def read(i: int) -> str:
        if i % 2:
            return str(task(emu, uri)[1]["TaskState"])
        return bios_version(emu, uuid)

    with ThreadPoolExecutor(16) as pool:
        seen = list(pool.map(read, range(32)))
    assert set(seen) == {"Completed", "1.1.0"}
    assert bios_version(emu, uuid) == "1.1.0"


def test_a_fail_image_ends_in_exception_and_changes_nothing(emu: SushyEmulator) -> None:
    uuid = SYSTEMS[2].uuid
    image = "http://127.0.0.1:9/bios-2.0.fail"
    r = update(emu, image, uuid)
    assert r.status_code == 202 and r.json()["TaskState"] == "Running"
    failed = wait_ended(emu, r.headers["Location"])
    assert (failed["TaskState"], failed["TaskStatus"]) == ("Exception", "Critical")
    [message] = failed["Messages"]
    assert message["MessageId"] == "Update.1.0.ApplyFailed" and message["Severity"] == "Critical"
    assert message["Message"].startswith(f"the image {image} could not be applied: ")
    assert bios_version(emu, uuid) == "1.0.0"


def test_one_task_updates_every_target_and_logs_each(emu: SushyEmulator) -> None:
    a, b = SYSTEMS[3].uuid, SYSTEMS[4].uuid
    image = "http://127.0.0.1:9/both.bin"
    before = members(emu)
    r = update(emu, image, a, b)
    assert r.status_code == 202
    assert members(emu) == [*before, r.headers["Location"]]
    wait_ended(emu, r.headers["Location"])
    assert (bios_version(emu, a), bios_version(emu, b)) == ("1.1.0", "1.1.0")
    assert log_lines(emu, a) == [image] and log_lines(emu, b) == [image]


def test_refused_requests_start_no_task_and_bump_nothing(emu: SushyEmulator) -> None:
    uuid = SYSTEMS[5].uuid
    before = members(emu)
    system = f"/redfish/v1/Systems/{uuid}"

    def post(body: dict[str, Any]) -> int:
        return requests.post(emu.url + SIMPLE_UPDATE, json=body, auth=AUTH, timeout=10).status_code

    assert post({"Targets": [system]}) == 400
    assert post({"ImageURI": "http://127.0.0.1:9/x.bin"}) == 400
    # sushy-tools checks the targets one by one: the system's version write is held, then dropped
    manager = "/redfish/v1/Managers/m"
    assert post({"ImageURI": "http://127.0.0.1:9/x.bin", "Targets": [system, manager]}) == 400
    assert update(emu, "http://127.0.0.1:9/x.bin", "no-such-system").status_code == 404
    assert members(emu) == before
    assert bios_version(emu, uuid) == "1.0.0"


def test_the_task_service_lists_every_task_and_refuses_unknown_ids(emu: SushyEmulator) -> None:
    uri = update(emu, "http://127.0.0.1:9/listed.bin", SYSTEMS[6].uuid).headers["Location"]
    assert uri in members(emu)
    assert get(emu, "/redfish/v1/").json()["Tasks"] == {"@odata.id": "/redfish/v1/TaskService"}
    service = get(emu, "/redfish/v1/TaskService").json()
    assert service["Tasks"] == {"@odata.id": TASKS}
    for unknown in ("999999", "abc"):
        r = get(emu, f"{TASKS}/{unknown}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "Base.1.0.ResourceMissingAtURI"


def test_through_the_sushy_library(emu: SushyEmulator) -> None:
    """What metalflow's Redfish client calls: SimpleUpdate's TaskMonitor, the Task, the TaskService."""
    uuid = SYSTEMS[7].uuid
    path = f"/redfish/v1/Systems/{uuid}"
    conn = sushy.Sushy(emu.url + "/redfish/v1", username=AUTH[0], password=AUTH[1])
    us = conn.get_update_service()
    monitor = us.simple_update("http://127.0.0.1:9/sushy.bin", targets=[path])
    uri = monitor.task_monitor_uri
    assert uri.startswith(TASKS + "/")
    assert monitor.is_processing
    assert monitor.task is not None and monitor.task.task_state == sushy.TaskState.RUNNING
    running = monitor.get_task()
    assert running.task_state == sushy.TaskState.RUNNING  # (sushy 5.14's Task.is_processing is broken)
    again = conn.get_task_monitor(uri)  # after a crash: the URI is all a client kept
    assert again.is_processing and again.task.identity == running.identity

    listed = {t.path: t for t in conn.get_task_service().tasks.get_members()}
    assert json.loads(listed[uri].json["Payload"]["JsonBody"])["Targets"] == [path]

    wait_for(lambda: not monitor.check_is_processing, 20, "the Task to end", interval=0.05)
    done = monitor.get_task()
    assert done.task_state == sushy.TaskState.COMPLETED and done.percent_complete == 100
    assert done.task_status == sushy.Health.OK and done.end_time
    assert [m.message_id for m in done.messages] == ["Update.1.0.UpdateSuccessful"]
    member = conn.get_task_service().tasks.get_member(uri)
    assert member.task_state == sushy.TaskState.COMPLETED
    assert conn.get_system(path).bios_version == "1.1.0"

    failing = us.simple_update("http://127.0.0.1:9/sushy.fail", targets=[path])
    failing.wait(30)  # sushy's own loop: 1 s between polls (no Retry-After)
    failed = failing.get_task()
    assert failed.task_state == sushy.TaskState.EXCEPTION and failed.task_status == sushy.Health.CRITICAL
    assert "could not be applied" in failed.messages[0].message
    assert conn.get_system(path).bios_version == "1.1.0"


def test_tasks_and_ids_survive_an_emulator_restart(tmp_path: Path) -> None:
    """Also: sushy-tools' own static Tasks/42 rule serves the real task 42, not its template."""
    system = _system(0x40)
    first = start_sushy(tmp_path, [system], *AUTH, power_delay=(1, 1), update_seconds=1)
    try:
        assert get(first, f"{TASKS}/42").status_code == 404  # sushy-tools' would be 200 Completed
        r = update(first, "http://127.0.0.1:9/before-restart.bin", system.uuid)
        assert r.status_code == 202 and r.headers["Location"] == f"{TASKS}/1"
    finally:
        first.stop()
    assert (tmp_path / "state" / "metalflow-tasks.json").exists()
    again = start_sushy(tmp_path, [system], *AUTH, port=first.port, power_delay=(1, 1), update_seconds=1)
    try:
        assert members(again) == [f"{TASKS}/1"]
        done = wait_ended(again, f"{TASKS}/1")
        assert done["TaskState"] == "Completed"
        assert json.loads(done["Payload"]["JsonBody"])["ImageURI"] == "http://127.0.0.1:9/before-restart.bin"
        assert bios_version(again, system.uuid) == "1.1.0"
        for n in range(2, 43):  # ids go on from the stored next id, up to the one sushy-tools hard-wired
            r = update(again, f"http://127.0.0.1:9/filler-{n}.fail", system.uuid)
            assert r.headers["Location"] == f"{TASKS}/{n}"
        status, task42 = task(again, f"{TASKS}/42")
        assert status in (200, 202) and task42["Id"] == "42"
        assert json.loads(task42["Payload"]["JsonBody"])["ImageURI"] == "http://127.0.0.1:9/filler-42.fail"
        assert len(members(again)) == 42
        assert wait_ended(again, f"{TASKS}/42")["TaskState"] == "Exception"
        assert bios_version(again, system.uuid) == "1.1.0"
        assert len(log_lines(again, system.uuid)) == 42  # the log file is appended to across starts
    finally:
        again.stop()
