"""Redfish update Tasks in the test bed's sushy-emulator that run and end as a real BMC's do.

Installed by testbed.sushy_uefihttp's main(), after testbed.sushy_bios.

sushy-tools 2.2's SimpleUpdate bumps BiosVersion at once and answers 204 pointing at a static Task
42 that is always Completed. A real BMC answers 202 with a Task that runs a while and ends
Completed or Exception; metalflow follows it and, after a crash, finds it again by the request it
records (its `Payload`) instead of flashing twice. So, here:

- SimpleUpdate: sushy-tools' view still checks the request (ImageURI and Targets required, no
  Manager target, 404 for an unknown system) but its version write is held back; an accepted
  request becomes one Task for all its target systems, answered 202 with `Location` and the Task
  as body (what sushy's TaskMonitor reads).
- A Task runs METALFLOW_SUSHY_UPDATE_SECONDS (default 3, read at start) and is settled lazily:
  the first request after its deadline ends it, Completed with each target's BiosVersion bumped
  (minor + 1, once: under a lock), or Exception with the version unchanged when the image's path
  ends in `.fail`.
- Tasks and the next id live in `metalflow-tasks.json` in the emulator's state dir, so a client
  finds its Task after an emulator restart too (one due meanwhile settles on the next request).
- Routes: TaskService, Tasks (every Task), Tasks/<id>: 202 while Running (the Location is the
  task monitor, and sushy's Task.is_processing / TaskMonitor look for 202), 200 once it ended, 404
  for an unknown id. sushy-tools' own static Tasks/42 rule serves task 42 like any other. The
  service root gets the `Tasks` link sushy's get_task_service() needs.

Upstream views are wrapped, never copied.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import flask
from sushy_tools.emulator import main as emulator
from sushy_tools.emulator import memoize

UPDATE_SECONDS_ENV = "METALFLOW_SUSHY_UPDATE_SECONDS"
DEFAULT_UPDATE_SECONDS = 3.0
FAIL_SUFFIX = ".fail"  # an ImageURI whose path ends so: the Task ends in Exception

TASK_SERVICE = "/redfish/v1/TaskService"
TASKS = f"{TASK_SERVICE}/Tasks"
SIMPLE_UPDATE_URI = "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate"
STORE_FILE = "metalflow-tasks.json"

RUNNING, COMPLETED, EXCEPTION = "Running", "Completed", "Exception"

# sushy-tools' endpoints (Flask view names)
ROOT_VIEW = "root_resource"
TASK_SERVICE_VIEW = "simple_task_service"
STATIC_TASK_VIEW = "simple_task"  # its rule is /redfish/v1/TaskService/Tasks/42
STATIC_TASK_ID = 42
SIMPLE_UPDATE_VIEW = "UpdateService.update_service_simple_update"


def timestamp(epoch: float) -> str:
    """Redfish DateTime, whole seconds with an offset, as BMCs write it."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def bump_minor(version: str) -> str:
    """The next BiosVersion, as sushy-tools' SimpleUpdate makes it: 1.0.0 -> 1.1.0."""
    parts = version.split(".")
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"BiosVersion {version!r} has no numeric minor part")
    parts[1] = str(int(parts[1]) + 1)
    return ".".join(parts)


def failure_of(image_uri: str) -> str | None:
    """Why the image cannot be applied, or None: only `.fail` images fail."""
    if urlparse(image_uri).path.endswith(FAIL_SUFFIX):
        return f"image verification failed (the test bed fails every image ending in {FAIL_SUFFIX})"
    return None


def _message(
    message_id: str, message: str, args: list[str], severity: str, resolution: str
) -> dict[str, Any]:
    return {
        "@odata.type": "#Message.v1_1_1.Message",
        "MessageId": f"Update.1.0.{message_id}",
        "Message": message,
        "MessageArgs": args,
        "MessageSeverity": severity,
        "Severity": severity,
        "Resolution": resolution,
    }


@dataclass
class Task:
    """One SimpleUpdate as the BMC runs it; the fields are what the JSON store keeps."""

    id: int
    targets: list[str]  # the target systems' UUIDs, as sushy-tools resolved them
    image_uri: str
    json_body: str  # the request, for the Payload
    start: float  # epoch seconds: they mean the same after a restart
    deadline: float
    state: str = RUNNING
    status: str = "OK"
    end: float | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"{TASKS}/{self.id}"

    def percent(self, now: float) -> int:
        if self.state != RUNNING:
            return 100
        span = self.deadline - self.start
        return 99 if span <= 0 else max(0, min(99, int(100 * (now - self.start) / span)))

    def resource(self, now: float) -> dict[str, Any]:
        """The DMTF Task; `Payload` is what lets a client recognise the request it made."""
        body: dict[str, Any] = {
            "@odata.id": self.uri,
            "@odata.type": "#Task.v1_4_3.Task",
            "Id": str(self.id),
            "Name": f"Task {self.id}",
            "Description": f"SimpleUpdate of {self.image_uri}",
            "TaskMonitor": self.uri,  # the Location answered: 202 while Running
            "TaskState": self.state,
            "TaskStatus": self.status,
            "PercentComplete": self.percent(now),
            "StartTime": timestamp(self.start),
            "Messages": self.messages,
            "Payload": {
                "TargetUri": SIMPLE_UPDATE_URI,
                "HttpOperation": "POST",
                "HttpHeaders": [],
                "JsonBody": self.json_body,
            },
        }
        if self.end is not None:
            body["EndTime"] = timestamp(self.end)
        return body


class TaskStore:
    """Every Task, in memory and in a JSON file rewritten whole (atomically) on each change.
    One lock covers creating, settling and reading, so a Task ends, and bumps, exactly once."""

    def __init__(self, path: Path, seconds: float):
        self.path, self.seconds = path, seconds
        self.lock = threading.Lock()
        data = json.loads(path.read_text()) if path.exists() else {}
        self.next_id = int(data.get("next_id", 1))
        self.tasks = {int(t["id"]): Task(**t) for t in data.get("tasks", [])}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = {"next_id": self.next_id, "tasks": [asdict(t) for t in self.tasks.values()]}
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)

    def create(self, targets: list[str], image_uri: str, json_body: str) -> dict[str, Any]:
        with self.lock:
            now = time.time()
            task = Task(self.next_id, targets, image_uri, json_body, now, now + self.seconds)
            self.next_id += 1
            self.tasks[task.id] = task
            self._save()
            return task.resource(now)

    def due(self, now: float) -> bool:
        with self.lock:
            return any(t.state == RUNNING and t.deadline <= now for t in self.tasks.values())

    def settle(self, systems: Any) -> None:
        """End every Running Task whose deadline passed; saved one by one, right after its bump."""
        with self.lock:
            now = time.time()
            for task in self.tasks.values():
                if task.state == RUNNING and task.deadline <= now:
                    _finish(task, systems, now)
                    self._save()

    def get(self, task_id: int) -> dict[str, Any] | None:
        with self.lock:
            task = self.tasks.get(task_id)
            return None if task is None else task.resource(time.time())

    def uris(self) -> list[str]:
        with self.lock:
            return [self.tasks[i].uri for i in sorted(self.tasks)]


def _finish(task: Task, systems: Any, now: float) -> None:
    reason = failure_of(task.image_uri)
    if reason is None:
        try:
            for uuid in task.targets:
                version = str(systems.get_versions(uuid).get("BiosVersion") or "")
                systems.set_versions(uuid, {"BiosVersion": bump_minor(version)})
        except Exception as exc:  # the system went away, the driver refuses: the Task says so
            reason = str(exc) or type(exc).__name__
    targets = ", ".join(task.targets)
    task.end = now
    if reason is None:
        task.state, task.status = COMPLETED, "OK"
        task.messages = [
            _message(
                "UpdateSuccessful",
                f"Device '{uuid}' successfully updated with image '{task.image_uri}'.",
                [uuid, task.image_uri],
                "OK",
                "None.",
            )
            for uuid in task.targets
        ]
    else:
        task.state, task.status = EXCEPTION, "Critical"
        task.messages = [
            _message(
                "ApplyFailed",
                f"the image {task.image_uri} could not be applied: {reason}",
                [task.image_uri, targets],
                "Critical",
                "Check the image and retry the update.",
            )
        ]


# --- the emulator's side ----------------------------------------------------------------------------

_seconds = DEFAULT_UPDATE_SECONDS
_store: TaskStore | None = None
_store_lock = threading.Lock()
_held = threading.local()  # .writes: the set_versions targets held back on this thread, or None


def store() -> TaskStore:
    """The emulator's store, in its state dir (known once the emulator read its config)."""
    global _store
    with _store_lock:
        if _store is None:
            state_dir = emulator.app.config.get("SUSHY_EMULATOR_STATE_DIR") or memoize.PersistentDict.DBPATH
            _store = TaskStore(Path(state_dir) / STORE_FILE, _seconds)
        return _store


def _hold_version_writes(systems: Any) -> None:
    """Wrap the driver instance's set_versions (once): while a SimpleUpdate view runs on this
    thread, the write sushy-tools makes is recorded instead, to happen when the Task completes."""
    with _store_lock:
        if getattr(systems, "_metalflow_held", False):
            return
        write = systems.set_versions

        def set_versions(identity: str, firmware_versions: Any) -> Any:
            held = getattr(_held, "writes", None)
            if held is None:
                return write(identity, firmware_versions)
            held.append(str(identity))
            return None

        systems.set_versions = set_versions
        systems._metalflow_held = True


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> flask.Response:
    return flask.Response(
        json.dumps(body, indent=2), status=status, headers=headers, content_type="application/json"
    )


def _not_found(what: str) -> flask.Response:
    message = f"{what} was not found"
    info = [{"MessageId": "Base.1.0.ResourceMissingAtURI", "Message": message}]
    error = {"code": "Base.1.0.ResourceMissingAtURI", "message": message, "@Message.ExtendedInfo": info}
    return _json({"error": error}, 404)


def _simple_update(view: Callable[..., Any]) -> Callable[..., Any]:
    """sushy-tools' SimpleUpdate (and testbed.sushy_bios' log line) with its version write held:
    accepted (its 204), the request becomes a Running Task, answered 202 as a BMC would."""

    @functools.wraps(view)
    def handler(*args: Any, **kwargs: Any) -> Any:
        _hold_version_writes(emulator.app.systems)
        held: list[str] = []
        _held.writes = held
        try:
            response = view(*args, **kwargs)
        finally:
            _held.writes = None
        if not (isinstance(response, flask.Response) and response.status_code == 204 and held):
            return response  # refused: nothing held is written, no Task
        body = flask.request.get_json(silent=True) or {}
        task = store().create(list(dict.fromkeys(held)), str(body.get("ImageURI")), json.dumps(body))
        return _json(task, 202, {"Location": task["@odata.id"]})

    return handler


def task_view(task_id: str) -> flask.Response:
    """One Task: 202 while Running, 200 once it ended (settled by the before-request hook)."""
    task = store().get(int(task_id)) if task_id.isdigit() else None
    if task is None:
        return _not_found(f"Task {task_id}")
    return _json(task, 202 if task["TaskState"] == RUNNING else 200)


def tasks_view() -> flask.Response:
    uris = store().uris()
    return _json(
        {
            "@odata.id": TASKS,
            "@odata.type": "#TaskCollection.TaskCollection",
            "Name": "Task Collection",
            "Members": [{"@odata.id": uri} for uri in uris],
            "Members@odata.count": len(uris),
        }
    )


def _with_json(view: Callable[..., Any], change: Callable[[dict[str, Any]], None]) -> Callable[..., Any]:
    """sushy-tools' view, its JSON body changed when it answered 200."""

    @functools.wraps(view)
    def handler(*args: Any, **kwargs: Any) -> Any:
        response = view(*args, **kwargs)
        if isinstance(response, flask.Response) and response.status_code == 200:
            body = response.get_json()
            change(body)
            response.set_data(json.dumps(body, indent=4))
        return response

    return handler


def _root_links_tasks(body: dict[str, Any]) -> None:
    body.setdefault("Tasks", {"@odata.id": TASK_SERVICE})


def _service_time_now(body: dict[str, Any]) -> None:
    body["DateTime"] = timestamp(time.time())


def settle_due_tasks() -> None:
    """Before every request: any read (a Task, a System's BiosVersion) sees due Tasks ended."""
    tasks = store()
    if tasks.due(time.time()):
        tasks.settle(emulator.app.systems)


_installed = False


def install() -> None:
    """Wrap and add the views (once, before the emulator serves); reads the update duration."""
    global _installed, _seconds
    if _installed:
        return
    _installed = True
    _seconds = max(0.0, float(os.environ.get(UPDATE_SECONDS_ENV) or DEFAULT_UPDATE_SECONDS))
    app = emulator.app
    views = app.view_functions
    views[SIMPLE_UPDATE_VIEW] = _simple_update(views[SIMPLE_UPDATE_VIEW])
    views[ROOT_VIEW] = _with_json(views[ROOT_VIEW], _root_links_tasks)
    views[TASK_SERVICE_VIEW] = _with_json(views[TASK_SERVICE_VIEW], _service_time_now)
    # Werkzeug prefers a static rule over a variable one: sushy-tools' Tasks/42 keeps its rule,
    # and serves task 42 like any other.
    views[STATIC_TASK_VIEW] = functools.partial(task_view, str(STATIC_TASK_ID))
    app.add_url_rule(TASKS, "metalflow_tasks", tasks_view, methods=["GET"])
    app.add_url_rule(f"{TASKS}/<task_id>", "metalflow_task", task_view, methods=["GET"])
    app.before_request(settle_due_tasks)
