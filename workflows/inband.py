"""Running work ON the host: boot the deploy ramdisk, then dispatch to its agent's queue.

The agent is a Temporal worker polling `host-<id>` from inside the ramdisk, so "the ramdisk
never booted" is simply a schedule-to-start timeout. A ramdisk left running by an earlier
step is reused (Ironic calls this fast-track): a short probe first, a real boot only if
nobody picks the task up.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType

from metalflow.api.bmc import BMC_EJECT_MEDIA, BMC_INSERT_MEDIA, BootDevice, MediaRequest, PowerAction
from metalflow.api.boot import BOOT_CLEANUP, BOOT_PREPARE, BootPrepareRequest, BootPrepareResult, BootPurpose
from metalflow.api.configdrive import CONFIGDRIVE_REMOVE, ConfigDriveRemove
from metalflow.api.errors import ErrorName
from metalflow.api.models import HostRef, HostSpec
from workflows import bmc_calls
from workflows.options import (
    AGENT_RETRY,
    BMC_HEARTBEAT,
    BMC_RETRY,
    BMC_TIMEOUT,
    FAST_TRACK_PROBE,
    LOCAL_RETRY,
    LOCAL_TIMEOUT,
)

with workflow.unsafe.imports_passed_through():
    from metalflow.api.bmc_address import BootMethod, parse_bmc_address

T = TypeVar("T")

# Histories recorded before config drives lived only as long as their deploy attempt stage one
# per host that is never removed (DeployHost) and remove none on deprovision (CleanHost).
CONFIGDRIVE_PATCH = "configdrive-per-attempt"
# Histories recorded before UEFI HTTP boot was built never got past preparing a redfish-uefihttp
# host's boot; the BMC is now asked for the UefiHttp boot target instead of PXE.
UEFI_HTTP_PATCH = "uefi-http-boot-target"
# Histories recorded before per-host virtual-media ISOs left the ISO inserted after deprovisioning.
VMEDIA_EJECT_PATCH = "vmedia-eject-after-deprovision"


async def boot_ramdisk(
    ref: HostRef, spec: HostSpec, purpose: BootPurpose, powered_on: bool, system_uuid: str = ""
) -> None:
    """Point the host at the deploy ramdisk (PXE or virtual media) and (re)start it; a host
    without a MAC is PXE-booted by its registered SMBIOS `system_uuid`."""
    address = parse_bmc_address(spec.bmc.address, spec.bmc.disable_certificate_verification)
    prepared = await workflow.execute_activity(
        BOOT_PREPARE,
        BootPrepareRequest(
            host=ref,
            boot_mac_address=spec.boot_mac_address,
            purpose=purpose,
            boot_mode=spec.boot_mode,
            boot_method=address.boot_method,
            architecture=spec.architecture,
            preprovisioning_network_data_name=spec.preprovisioning_network_data_name,
            system_uuid="" if spec.boot_mac_address else system_uuid,
        ),
        result_type=BootPrepareResult,
        start_to_close_timeout=LOCAL_TIMEOUT,
        retry_policy=LOCAL_RETRY,
        summary=f"prepare network boot for {purpose.value}",
    )
    if address.virtual_media:
        await workflow.execute_activity(
            BMC_INSERT_MEDIA,
            MediaRequest(target=bmc_calls.target_of(spec), image_url=prepared.iso_url),
            start_to_close_timeout=BMC_TIMEOUT,
            heartbeat_timeout=BMC_HEARTBEAT,
            retry_policy=BMC_RETRY,
            summary="insert deploy ISO",
        )
        await bmc_calls.set_boot_device(spec, BootDevice.CD)
    elif address.boot_method == BootMethod.UEFI_HTTP and workflow.patched(UEFI_HTTP_PATCH):
        await bmc_calls.set_boot_device(spec, BootDevice.UEFI_HTTP)
    else:
        await bmc_calls.set_boot_device(spec, BootDevice.PXE)
    await bmc_calls.power(spec, PowerAction.REBOOT if powered_on else PowerAction.ON)


async def run_on_host(
    ref: HostRef,
    spec: HostSpec,
    activity: str,
    arg: Any,
    result_type: type[T],
    *,
    purpose: BootPurpose,
    powered_on: bool,
    fast_track: bool = True,
    ramdisk_timeout: timedelta,
    start_to_close: timedelta,
    heartbeat: timedelta | None = None,
    summary: str,
    system_uuid: str = "",
) -> T:
    """Run an agent activity, booting the ramdisk first unless one already answers."""

    async def attempt(schedule_to_start: timedelta) -> T:
        return await workflow.execute_activity(
            activity,
            args=[] if arg is None else [arg],
            result_type=result_type,
            task_queue=ref.agent_task_queue,
            schedule_to_start_timeout=schedule_to_start,
            start_to_close_timeout=start_to_close,
            heartbeat_timeout=heartbeat,
            retry_policy=AGENT_RETRY,
            summary=summary,
        )

    if powered_on and fast_track:
        try:
            return await attempt(FAST_TRACK_PROBE)
        except ActivityError as err:
            if not _is_schedule_to_start_timeout(err):
                raise
    await boot_ramdisk(ref, spec, purpose, powered_on, system_uuid)
    try:
        return await attempt(ramdisk_timeout)
    except ActivityError as err:
        if _is_schedule_to_start_timeout(err):
            raise ApplicationError(
                f"the deploy ramdisk of {ref.namespace}/{ref.name} never started its agent "
                f"within {int(ramdisk_timeout.total_seconds())}s (queue {ref.agent_task_queue}); "
                "check the host's network boot (bootMACAddress, DHCP, boot server) and console"
                + (
                    f"; it was to boot by its SMBIOS UUID {system_uuid}: if the boot server logged "
                    "'unknown machine' for another UUID, the firmware and the BMC disagree on it "
                    "(set spec.bootMACAddress)"
                    if system_uuid and not spec.boot_mac_address
                    else ""
                ),
                type=ErrorName.RAMDISK_TIMEOUT.value,
                non_retryable=True,
            ) from err
        raise


async def cleanup_boot(ref: HostRef) -> None:
    """Forget the host's network-boot entries: from now on it boots its own disk."""
    await workflow.execute_activity(
        BOOT_CLEANUP,
        ref,
        start_to_close_timeout=LOCAL_TIMEOUT,
        retry_policy=LOCAL_RETRY,
        summary="remove network boot entries",
    )


async def eject_media(spec: HostSpec) -> None:
    """The BMC ejects the deploy ISO (a virtual-media host leaving the ramdisk)."""
    await workflow.execute_activity(
        BMC_EJECT_MEDIA,
        MediaRequest(target=bmc_calls.target_of(spec)),
        start_to_close_timeout=BMC_TIMEOUT,
        heartbeat_timeout=BMC_HEARTBEAT,
        retry_policy=BMC_RETRY,
        summary="eject deploy ISO",
    )


async def remove_configdrives(ref: HostRef, attempt: str = "") -> None:
    """Take a deploy attempt's config drive (all of the host's, without one) off the boot server."""
    await workflow.execute_activity(
        CONFIGDRIVE_REMOVE,
        ConfigDriveRemove(host=ref, attempt=attempt),
        start_to_close_timeout=LOCAL_TIMEOUT,
        retry_policy=LOCAL_RETRY,
        summary="remove the config drive from the boot server",
    )


def _is_schedule_to_start_timeout(err: ActivityError) -> bool:
    cause = err.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START
