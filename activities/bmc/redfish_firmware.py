"""Redfish firmware updates through sushy: component versions, `UpdateService.SimpleUpdate`, and
the Task it starts, followed to its end.

A SimpleUpdate is not idempotent: posted twice, the BMC flashes twice. Its answer can be lost
with the worker that asked, so the BMC's Tasks for the same image and target (the Task's
`Payload`, DMTF's record of the request) are listed before the first attempt, and an attempt
that finds one not on that list follows it instead of posting again. No clock is compared: a
BMC's may be anything.
"""

from __future__ import annotations

import json
from typing import Any

from sushy import exceptions as sx

from metalflow.api.errors import ErrorName, permanent
from metalflow.api.firmware_components import FirmwareTaskState

SIMPLE_UPDATE = "UpdateService.SimpleUpdate"


def versions(system: Any) -> dict[str, str]:
    """bios: the system's BiosVersion; bmc: its first manager's FirmwareVersion."""
    system.refresh(force=True)
    out = {"bios": str(system.bios_version or "")}
    try:
        managers = system.managers
    except sx.SushyError:
        managers = []
    if managers:
        out["bmc"] = str(managers[0].firmware_version or "")
    return out


def _target(system: Any, component: str, where: str) -> str:
    if component == "bios":
        return str(system.path)
    if component == "bmc":
        try:
            managers = system.managers
        except sx.SushyError:
            managers = []
        if managers:
            return str(managers[0].path)
    raise permanent(
        ErrorName.BMC_UNSUPPORTED,
        f"{where} cannot update {component!r} here: metalflow updates bios and bmc "
        "(a NIC's firmware needs its own target); remove the update or apply it by hand",
    )


def _same_request(task: Any, url: str, target: str) -> bool:
    payload = (task.json or {}).get("Payload") or {}
    if SIMPLE_UPDATE not in str(payload.get("TargetUri", "")):
        return False
    try:
        body = json.loads(payload.get("JsonBody") or "{}")
    except ValueError:
        return False
    targets = body.get("Targets") or []
    return bool(body.get("ImageURI") == url and target in targets)


def tasks_for(conn: Any, url: str, target: str) -> list[str]:
    """The URIs of the BMC's Tasks for this image and target (none without a TaskService)."""
    try:
        members = conn.get_task_service().tasks.get_members()
    except sx.SushyError:
        return []
    return [str(task.path) for task in members if _same_request(task, url, target)]


def component_target(system: Any, component: str, where: str) -> str:
    return _target(system, component, where)


def start_update(conn: Any, system: Any, component: str, url: str, known: list[str], where: str) -> str:
    """POST SimpleUpdate, unless the BMC has a Task for it that was not there before the first
    attempt (this request's, its answer lost); the Task's URI."""
    target = _target(system, component, where)
    new = [uri for uri in tasks_for(conn, url, target) if uri not in known]
    if new:
        return new[-1]
    try:
        monitor = conn.get_update_service().simple_update(url, targets=[target])
    except sx.BadRequestError as err:
        raise permanent(
            ErrorName.FIRMWARE_UPDATE_FAILED,
            f"{where} refused the {component} update from {url}: {err.detail or err}",
        ) from None
    return str(monitor.task_monitor_uri)


def task_state(conn: Any, uri: str) -> FirmwareTaskState:
    """The Task at `uri` as the BMC reports it now."""
    task = conn.get_task_service().tasks.get_member(uri)
    state = getattr(task.task_state, "value", task.task_state)
    messages = [str(m.message or m.message_id or "") for m in (task.messages or [])]
    return FirmwareTaskState(uri=uri, state=str(state or ""), messages=[m for m in messages if m])
