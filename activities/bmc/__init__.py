"""BMC activities: one contract (metalflow.api), the driver picked by the registry.

Thin on purpose: each activity opens the driver its target's address names (registry.py) and
calls one method of the `BMCDriver` Protocol (driver.py); no activity knows a protocol.
Blocking (sushy, pyghmi), so these are plain functions the worker runs in its thread pool.
Credentials are resolved from the SecretRef on every call and never leave the call.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from temporalio import activity

from activities.bmc.registry import open_driver
from activities.boot import agent_tokens
from metalflow.api.bmc import (
    BMC_APPLY_BIOS,
    BMC_CONFIGURE_RAID,
    BMC_EJECT_MEDIA,
    BMC_FIRMWARE_TASKS,
    BMC_FIRMWARE_VERSIONS,
    BMC_INSERT_MEDIA,
    BMC_INVENTORY,
    BMC_POWER,
    BMC_READ_BIOS,
    BMC_SET_BOOT_DEVICE,
    BMC_START_FIRMWARE_UPDATE,
    BMC_VALIDATE,
    BMC_WAIT_FIRMWARE_TASK,
    BIOSApplyRequest,
    BIOSReadRequest,
    BMCTarget,
    BMCValidation,
    BootDeviceRequest,
    FirmwareTaskRequest,
    FirmwareTasks,
    FirmwareUpdateRequest,
    FirmwareVersions,
    MediaRequest,
    PowerAction,
    PowerRequest,
    PowerResult,
    RAIDRequest,
)
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.firmware import BIOSState, changes
from metalflow.api.firmware_components import FirmwareTaskState
from metalflow.api.models import HardwareDetails, HostRef
from metalflow.runtime.settings import get_settings

F = TypeVar("F", bound=Callable[..., Any])
HEARTBEAT_EVERY = 2.0


def _keepalive(fn: F) -> F:
    """Heartbeat from a side thread while the blocking BMC call runs, so a worker that dies
    mid-call is noticed within the heartbeat timeout rather than the whole start-to-close."""

    @functools.wraps(fn)
    def run(*args: Any) -> Any:
        stop = threading.Event()
        ctx = contextvars.copy_context()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_EVERY):
                with contextlib.suppress(Exception):
                    ctx.run(activity.heartbeat)

        ticker = threading.Thread(target=beat, name="bmc-heartbeat", daemon=True)
        ticker.start()
        try:
            return fn(*args)
        finally:
            stop.set()
            ticker.join()

    return run  # type: ignore[return-value]


@activity.defn(name=BMC_VALIDATE)
@_keepalive
def validate(target: BMCTarget) -> BMCValidation:
    """Registration: the credentials work and the system exists; report power and the driver."""
    driver = open_driver(target)
    checked = driver.validate()
    return BMCValidation(
        powered_on=checked.powered_on,
        credentials_version=driver.creds.version,
        driver=driver.protocol,
        vendor=driver.vendor,
        system_id=checked.system_id,
        system_uuid=checked.system_uuid,
    )


@activity.defn(name=BMC_POWER)
@_keepalive
def power(req: PowerRequest) -> PowerResult:
    driver = open_driver(req.target)
    if req.boot is not None:  # a retry sets it again: setting a boot device is idempotent
        driver.set_boot_device(req.boot.device, req.boot.persistent, req.boot.boot_mode)
    _new_boot_window(req, driver)
    result = driver.power(req.action, req.wait_seconds)
    activity.logger.info(
        "power %s on %s: on=%s changed=%s",
        req.action.value,
        driver.addr.base_url,
        result.powered_on,
        result.changed,
    )
    return result


def _new_boot_window(req: PowerRequest, driver: Any) -> None:
    """Before a power action that boots the host, its network boot gets a new agent token
    (activities/boot/agent_tokens.py): the boot about to start fetches its iPXE script once more,
    legitimately. The host is the calling workflow's (`host/<namespace>/<name>[/<step>]`)."""
    parts = (activity.info().workflow_id or "").split("/") if activity.in_activity() else []
    if len(parts) < 3 or parts[0] != "host" or req.action not in (PowerAction.ON, PowerAction.REBOOT):
        return
    if req.action == PowerAction.ON and driver.validate().powered_on:
        return  # already on: no boot, and a running ramdisk keeps its token
    agent_tokens.renew_for_boot(get_settings().boot_dir, HostRef(namespace=parts[1], name=parts[2]).host_id)


@activity.defn(name=BMC_SET_BOOT_DEVICE)
@_keepalive
def set_boot_device(req: BootDeviceRequest) -> None:
    open_driver(req.target).set_boot_device(req.device, req.persistent, req.boot_mode)


@activity.defn(name=BMC_INSERT_MEDIA)
@_keepalive
def insert_media(req: MediaRequest) -> None:
    open_driver(req.target).insert_media(req.image_url)


@activity.defn(name=BMC_EJECT_MEDIA)
@_keepalive
def eject_media(req: MediaRequest) -> None:
    open_driver(req.target).eject_media()


@activity.defn(name=BMC_CONFIGURE_RAID)
@_keepalive
def configure_raid(req: RAIDRequest) -> None:
    """Hardware volumes go to the driver (Redfish builds them; others refuse with metal3's "RAID
    configuration is not supported by the <driver> driver"). Software RAID is the agent's
    (workflows/raid.py); only histories from before it reach here with software volumes."""
    driver = open_driver(req.target)
    if req.raid.software_raid_volumes:
        raise permanent(
            ErrorName.BMC_UNSUPPORTED,
            f"RAID configuration is not supported by the {driver.name} driver for softwareRAIDVolumes: "
            "metalflow's agent builds them with mdadm; retry the host to have it do so",
        )
    volumes = [
        v.model_dump(mode="json", by_alias=True, exclude_none=True)
        for v in req.raid.hardware_raid_volumes or []
    ]
    driver.configure_raid(volumes)


@activity.defn(name=BMC_INVENTORY)
@_keepalive
def inventory(target: BMCTarget) -> HardwareDetails:
    """Out-of-band inspection (metal3's inspectionMode: fast): what the BMC reports, no boot."""
    return open_driver(target).inventory()


BIOS_POLL_SECONDS = 2.0


@activity.defn(name=BMC_READ_BIOS)
@_keepalive
def read_bios(req: BIOSReadRequest) -> BIOSState:
    """The BIOS's settings and schema; with `expect`, polled until the reboot applied them."""
    driver = open_driver(req.target)
    deadline = time.monotonic() + req.wait_seconds
    while True:
        state = driver.read_bios()
        left = changes(req.expect, state.settings, state.schema_)
        if not left and not (req.expect and set(req.expect) & set(state.pending)):
            return state
        if time.monotonic() >= deadline:
            detail = ", ".join(
                f"{n} is {state.settings.get(n, 'absent')!r}, want {v!r}" for n, v in left.items()
            )
            pending = ", ".join(sorted(set(req.expect) & set(state.pending)))
            raise permanent(
                ErrorName.FIRMWARE_SETTINGS_NOT_APPLIED,
                f"the BIOS did not apply the settings within {req.wait_seconds}s of the reboot: "
                f"{detail or 'values match'}{f'; still pending: {pending}' if pending else ''}; "
                "check the BMC's job queue, then retry",
            )
        time.sleep(BIOS_POLL_SECONDS)


@activity.defn(name=BMC_APPLY_BIOS)
@_keepalive
def apply_bios(req: BIOSApplyRequest) -> None:
    """Write settings to the BIOS's pending set (they apply at the next boot)."""
    driver = open_driver(req.target)
    driver.apply_bios_settings(req.settings)
    activity.logger.info(
        "BIOS settings written to %s: %s", driver.addr.base_url, ", ".join(sorted(req.settings))
    )


TASK_POLL_SECONDS = 2.0


@activity.defn(name=BMC_FIRMWARE_VERSIONS)
@_keepalive
def firmware_versions(target: BMCTarget) -> FirmwareVersions:
    return FirmwareVersions(versions=open_driver(target).firmware_versions())


@activity.defn(name=BMC_FIRMWARE_TASKS)
@_keepalive
def firmware_tasks(req: FirmwareUpdateRequest) -> FirmwareTasks:
    """The BMC's Tasks for this update, listed before the first attempt to start it."""
    return FirmwareTasks(uris=open_driver(req.target).firmware_tasks(req.component, req.url))


@activity.defn(name=BMC_START_FIRMWARE_UPDATE)
@_keepalive
def start_firmware_update(req: FirmwareUpdateRequest) -> FirmwareTaskState:
    """SimpleUpdate, once: a retry after a lost answer finds the Task the first call started."""
    driver = open_driver(req.target)
    uri = driver.start_firmware_update(req.component, req.url, req.known)
    activity.logger.info(
        "%s update from %s on %s: task %s", req.component, req.url, driver.addr.base_url, uri
    )
    return FirmwareTaskState(uri=uri)


@activity.defn(name=BMC_WAIT_FIRMWARE_TASK)
@_keepalive
def wait_firmware_task(req: FirmwareTaskRequest) -> FirmwareTaskState:
    """Follow the update Task to its end; one that ends badly fails the step with its messages."""
    driver = open_driver(req.target)
    deadline = time.monotonic() + req.wait_seconds
    while True:
        state = driver.firmware_task(req.uri)
        if state.done:
            if not state.ok:
                raise permanent(
                    ErrorName.FIRMWARE_UPDATE_FAILED,
                    f"the BMC's update task {req.uri} ended {state.state}: "
                    + ("; ".join(state.messages) or "no message"),
                )
            return state
        if time.monotonic() >= deadline:
            raise permanent(
                ErrorName.FIRMWARE_UPDATE_FAILED,
                f"the BMC's update task {req.uri} is still {state.state or 'unknown'} after "
                f"{req.wait_seconds}s; check the BMC, then retry",
            )
        time.sleep(TASK_POLL_SECONDS)


ACTIVITIES = [
    validate,
    power,
    set_boot_device,
    insert_media,
    eject_media,
    configure_raid,
    inventory,
    read_bios,
    apply_bios,
    firmware_versions,
    firmware_tasks,
    start_firmware_update,
    wait_firmware_task,
]
