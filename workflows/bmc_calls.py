"""Workflow-side helpers for the BMC activities: one place that builds targets and options."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

from metalflow.api.bmc import (
    BMC_APPLY_BIOS,
    BMC_CONFIGURE_RAID,
    BMC_FIRMWARE_TASKS,
    BMC_FIRMWARE_VERSIONS,
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
    BootDevice,
    BootDeviceRequest,
    BootSetting,
    FirmwareTaskRequest,
    FirmwareTasks,
    FirmwareUpdateRequest,
    FirmwareVersions,
    PowerAction,
    PowerRequest,
    PowerResult,
    RAIDRequest,
)
from metalflow.api.firmware import BIOSState
from metalflow.api.firmware_components import FirmwareTaskState, FirmwareUpdate
from metalflow.api.models import HardwareDetails, HostSpec
from workflows import patches
from workflows.options import BMC_HEARTBEAT, BMC_RETRY, BMC_TIMEOUT


def target_of(spec: HostSpec) -> BMCTarget:
    return BMCTarget(
        address=spec.bmc.address,
        credentials=spec.bmc.credentials,
        disable_certificate_verification=spec.bmc.disable_certificate_verification,
        boot_mac_address=spec.boot_mac_address,
    )


DISABLE_POWER_OFF_PATCH = "disable-power-off"


# Histories recorded before a boot's device and power went in one BMC call set them in two.
BOOT_WITH_POWER_PATCH = "boot-device-with-power"


async def boot_from(spec: HostSpec, device: BootDevice, action: PowerAction) -> bool:
    """Set the (one-time) boot device and drive power: one BMC activity (histories before the
    patch: two)."""
    if patches.patched(BOOT_WITH_POWER_PATCH):
        return await power(spec, action, BootSetting(device=device, boot_mode=spec.boot_mode))
    await set_boot_device(spec, device)
    return await power(spec, action)


async def power(spec: HostSpec, action: PowerAction, boot: BootSetting | None = None) -> bool:
    """Drive power (after setting `boot`, if given) and return whether the host is on afterwards.

    With spec.disablePowerOff the host is never powered off: metal3 reboots it instead.
    """
    if (
        spec.disable_power_off
        and action in (PowerAction.OFF, PowerAction.SOFT_OFF)
        and patches.patched(DISABLE_POWER_OFF_PATCH)
    ):
        action = PowerAction.REBOOT
    result = await workflow.execute_activity(
        BMC_POWER,
        PowerRequest(target=target_of(spec), action=action, boot=boot),
        result_type=PowerResult,
        start_to_close_timeout=BMC_TIMEOUT,
        heartbeat_timeout=BMC_HEARTBEAT,
        retry_policy=BMC_RETRY,
        summary=f"power {action.value}"
        + (f" from {boot.device.value}{' (persistent)' if boot.persistent else ''}" if boot else ""),
    )
    return result.powered_on


# A power read at rest is one short BMC GET: as a local activity it costs the host one workflow
# task and a marker instead of two workflow tasks and an activity task (issue 28: 10,000 hosts).
# Histories from before read it as an activity.
LOCAL_READ_PATCH = "power-read-local-activity"
LOCAL_READ_TIMEOUT = timedelta(seconds=60)  # the BMC's connect (10 s) and read (30 s) timeouts fit


async def read_power(spec: HostSpec) -> bool:
    """Whether the host is on, read with the same credential check registration makes: in the
    worker that runs the workflow (a local activity, retried there, recorded as a marker)."""
    if patches.patched(LOCAL_READ_PATCH):
        try:
            checked = await workflow.execute_local_activity(
                BMC_VALIDATE,
                target_of(spec),
                result_type=BMCValidation,
                start_to_close_timeout=LOCAL_READ_TIMEOUT,
                retry_policy=BMC_RETRY,
                summary="read power state",
            )
        except (ApplicationError, TimeoutError) as err:
            # a local activity's failure arrives unwrapped: wrap it as an activity's would be,
            # so callers handle both alike (the cause keeps the BMC's message and error type)
            raise ActivityError(
                "local activity error",
                scheduled_event_id=0,
                started_event_id=0,
                identity="",
                activity_type=BMC_VALIDATE,
                activity_id="",
                retry_state=None,
            ) from err
        return checked.powered_on
    checked = await workflow.execute_activity(
        BMC_VALIDATE,
        target_of(spec),
        result_type=BMCValidation,
        start_to_close_timeout=BMC_TIMEOUT,
        heartbeat_timeout=BMC_HEARTBEAT,
        retry_policy=BMC_RETRY,
        summary="read power state",
    )
    return checked.powered_on


async def set_boot_device(spec: HostSpec, device: BootDevice, persistent: bool = False) -> None:
    await workflow.execute_activity(
        BMC_SET_BOOT_DEVICE,
        BootDeviceRequest(
            target=target_of(spec), device=device, persistent=persistent, boot_mode=spec.boot_mode
        ),
        start_to_close_timeout=BMC_TIMEOUT,
        heartbeat_timeout=BMC_HEARTBEAT,
        retry_policy=BMC_RETRY,
        summary=f"boot device {device.value}{' (persistent)' if persistent else ' (once)'}",
    )


async def configure_raid(spec: HostSpec) -> None:
    """Apply spec.raid through the BMC; a driver without RAID fails it, non-retryable."""
    assert spec.raid is not None
    await workflow.execute_activity(
        BMC_CONFIGURE_RAID,
        RAIDRequest(target=target_of(spec), raid=spec.raid),
        start_to_close_timeout=BMC_TIMEOUT,
        heartbeat_timeout=BMC_HEARTBEAT,
        retry_policy=BMC_RETRY,
        summary="configure RAID (spec.raid)",
    )


async def inventory(spec: HostSpec) -> HardwareDetails:
    """The hardware as the BMC reports it, out of band (no ramdisk boot)."""
    return await workflow.execute_activity(
        BMC_INVENTORY,
        target_of(spec),
        result_type=HardwareDetails,
        start_to_close_timeout=BMC_TIMEOUT,
        heartbeat_timeout=BMC_HEARTBEAT,
        retry_policy=BMC_RETRY,
        summary="collect hardware inventory (out-of-band)",
    )


async def read_bios(spec: HostSpec, expect: dict[str, str] | None = None, wait_seconds: int = 0) -> BIOSState:
    """The BIOS's settings and schema; with `expect`, once the BMC reports them applied."""
    return await workflow.execute_activity(
        BMC_READ_BIOS,
        BIOSReadRequest(target=target_of(spec), expect=expect or {}, wait_seconds=wait_seconds),
        result_type=BIOSState,
        start_to_close_timeout=BMC_TIMEOUT + timedelta(seconds=wait_seconds),
        heartbeat_timeout=BMC_HEARTBEAT,
        retry_policy=BMC_RETRY,
        summary=f"wait for the BIOS to apply {len(expect)} settings" if expect else "read BIOS settings",
    )


async def apply_bios(spec: HostSpec, settings: dict[str, str | int | bool]) -> None:
    """Write BIOS settings to the pending set; they apply when the host next boots."""
    await workflow.execute_activity(
        BMC_APPLY_BIOS,
        BIOSApplyRequest(target=target_of(spec), settings=settings),
        start_to_close_timeout=BMC_TIMEOUT,
        heartbeat_timeout=BMC_HEARTBEAT,
        retry_policy=BMC_RETRY,
        summary=f"write BIOS settings {', '.join(sorted(settings))} (pending until reboot)",
    )


async def firmware_versions(spec: HostSpec) -> dict[str, str]:
    found = await workflow.execute_activity(
        BMC_FIRMWARE_VERSIONS,
        target_of(spec),
        result_type=FirmwareVersions,
        start_to_close_timeout=BMC_TIMEOUT,
        heartbeat_timeout=BMC_HEARTBEAT,
        retry_policy=BMC_RETRY,
        summary="read firmware versions",
    )
    return found.versions


async def update_firmware(spec: HostSpec, update: FirmwareUpdate, wait_seconds: int) -> None:
    """One SimpleUpdate, followed to its end. The BMC's Tasks for it are listed first (in
    history): a start whose answer was lost with its worker is found again on the BMC, never
    posted twice; the Task's URI is in history before it is followed."""
    request = FirmwareUpdateRequest(target=target_of(spec), component=update.component, url=update.url)
    before = await workflow.execute_activity(
        BMC_FIRMWARE_TASKS,
        request,
        result_type=FirmwareTasks,
        start_to_close_timeout=BMC_TIMEOUT,
        heartbeat_timeout=BMC_HEARTBEAT,
        retry_policy=BMC_RETRY,
        summary=f"list the BMC's {update.component} update tasks",
    )
    task = await workflow.execute_activity(
        BMC_START_FIRMWARE_UPDATE,
        request.model_copy(update={"known": before.uris}),
        result_type=FirmwareTaskState,
        start_to_close_timeout=BMC_TIMEOUT,
        heartbeat_timeout=BMC_HEARTBEAT,
        retry_policy=BMC_RETRY,
        summary=f"start {update.component} update from {update.url}",
    )
    await workflow.execute_activity(
        BMC_WAIT_FIRMWARE_TASK,
        FirmwareTaskRequest(target=target_of(spec), uri=task.uri, wait_seconds=wait_seconds),
        result_type=FirmwareTaskState,
        start_to_close_timeout=BMC_TIMEOUT + timedelta(seconds=wait_seconds),
        heartbeat_timeout=BMC_HEARTBEAT,
        retry_policy=BMC_RETRY,
        summary=f"wait for the {update.component} update task",
    )
