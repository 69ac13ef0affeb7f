"""Running work ON the host: boot the deploy ramdisk, then dispatch to its agent's queue.

The agent is a Temporal worker polling `host-<id>` from inside the ramdisk, so "the ramdisk
never booted" is simply a schedule-to-start timeout. A ramdisk left running by an earlier
step is reused (Ironic calls this fast-track): a short probe first, a real boot only if
nobody picks the task up.

Anything that reaches the frontend can poll that queue, so no reply is taken on trust: each
request carries a nonce, and the reply's proof of the boot's agent token is checked by a local
activity (activities/agent_replies.py) before the step acts on it. A refused reply is a security
event (this history, the log, a metric, the host's status) and the request is made again; a void
or compromised token is replaced by booting the host again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType

from metalflow.api.agent import AGENT_VERIFY, AgentReply, InventoryRequest, ReplyVerdict, VerifyReply
from metalflow.api.bmc import BMC_EJECT_MEDIA, BMC_INSERT_MEDIA, BootDevice, MediaRequest, PowerAction
from metalflow.api.boot import BOOT_CLEANUP, BOOT_PREPARE, BootPrepareRequest, BootPrepareResult, BootPurpose
from metalflow.api.configdrive import CONFIGDRIVE_REMOVE, ConfigDriveRemove
from metalflow.api.errors import AGENT_REPLY_REFUSED, ErrorName
from metalflow.api.models import HostRef, HostSpec
from metalflow.api.security import SECURITY_EVENT_SIGNAL, SecurityEvent
from workflows import bmc_calls, patches
from workflows.control_calls import control_call
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
# Histories recorded before agent replies were proved took the agent's results as they came.
AGENT_PROOF_PATCH = "agent-reply-proof"
# A reply without a valid proof is asked for again, this many times in all, before the step fails.
MAX_REFUSED_REPLIES = 5


async def boot_ramdisk(
    ref: HostRef, spec: HostSpec, purpose: BootPurpose, powered_on: bool, system_uuid: str = ""
) -> None:
    """Point the host at the deploy ramdisk (PXE or virtual media) and (re)start it; a host
    without a MAC is PXE-booted by its registered SMBIOS `system_uuid`."""
    address = parse_bmc_address(spec.bmc.address, spec.bmc.disable_certificate_verification)
    prepared = await control_call(
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
        device = BootDevice.CD
    elif address.boot_method == BootMethod.UEFI_HTTP and patches.patched(UEFI_HTTP_PATCH):
        device = BootDevice.UEFI_HTTP
    else:
        device = BootDevice.PXE
    await bmc_calls.boot_from(spec, device, PowerAction.REBOOT if powered_on else PowerAction.ON)


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

    async def call(args: list[Any], schedule_to_start: timedelta, result: type[Any] | None) -> Any:
        return await workflow.execute_activity(
            activity,
            args=args,
            result_type=result,
            task_queue=ref.agent_task_queue,
            schedule_to_start_timeout=schedule_to_start,
            start_to_close_timeout=start_to_close,
            heartbeat_timeout=heartbeat,
            retry_policy=AGENT_RETRY,
            summary=summary,
        )

    async def attempt(schedule_to_start: timedelta) -> T:
        if not patches.patched(AGENT_PROOF_PATCH):
            return await call([] if arg is None else [arg], schedule_to_start, result_type)  # type: ignore[no-any-return]
        for _ in range(MAX_REFUSED_REPLIES):
            nonce = str(workflow.uuid4())
            # decoded here, not by the SDK: whatever a poller sends must not fail the workflow task
            reply = _as_reply(await call([_with_nonce(arg, nonce)], schedule_to_start, None))
            verdict = await workflow.execute_local_activity(
                AGENT_VERIFY,
                VerifyReply(host=ref, activity=activity, nonce=nonce, reply=reply),
                result_type=ReplyVerdict,
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
                summary=f"check the proof of {activity}'s reply",
            )
            if verdict.ok:
                return _parsed(result_type, reply.result)
            await _security_event(activity, verdict.reason)
            if verdict.reboot:  # the boot's token is void or compromised: a new boot, a new token
                await boot_ramdisk(ref, spec, purpose, True, system_uuid)
                schedule_to_start = ramdisk_timeout
        raise ApplicationError(
            f"{ref.namespace}/{ref.name}: {MAX_REFUSED_REPLIES} replies to {activity} in a row carried no "
            "valid proof of the host's agent token (see the host's securityEvents); something other "
            f"than the host's ramdisk is polling {ref.agent_task_queue}",
            type=AGENT_REPLY_REFUSED,
            non_retryable=True,
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
    await control_call(BOOT_CLEANUP, ref, summary="remove network boot entries")


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
    await control_call(
        CONFIGDRIVE_REMOVE,
        ConfigDriveRemove(host=ref, attempt=attempt),
        summary="remove the config drive from the boot server",
    )


def _with_nonce(arg: Any, nonce: str) -> Any:
    """The request, with this call's nonce (inventory has no request of its own: it gets one)."""
    return InventoryRequest(nonce=nonce) if arg is None else arg.model_copy(update={"nonce": nonce})


def _as_reply(value: Any) -> AgentReply:
    """An AgentReply, or (anything else a poller sent) one without proof, which is refused."""
    try:
        return AgentReply.model_validate(value)
    except ValidationError:
        return AgentReply()


def _parsed(result_type: type[T], value: Any) -> T:
    if result_type is type(None):
        return None  # type: ignore[return-value]
    return result_type.model_validate(value)  # type: ignore[attr-defined, no-any-return]


async def _security_event(activity: str, reason: str) -> None:
    """A refused reply: in this step's history (the verdict), the log, and the host's status."""
    info = workflow.info()
    workflow.logger.warning("SECURITY: %s's reply refused: %s", activity, reason)
    if info.parent is not None:
        event = SecurityEvent(at=workflow.now(), step=info.workflow_id, activity=activity, reason=reason)
        await workflow.get_external_workflow_handle(info.parent.workflow_id).signal(
            SECURITY_EVENT_SIGNAL, event
        )


def _is_schedule_to_start_timeout(err: ActivityError) -> bool:
    cause = err.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START
