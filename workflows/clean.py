"""CleanHost: wipe disks per automatedCleaningMode (preparing), or before reuse (deprovisioning)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from metalflow.api.agent import AGENT_CLEAN, CleanRequest, CleanResult
from metalflow.api.bmc import PowerAction
from metalflow.api.boot import BootPurpose
from metalflow.api.host import CLEAN_HOST, StepInput, StepResult
from metalflow.api.join import KUBEADM_LEAVE, LeaveRequest, LeaveResult
from metalflow.api.models import CleaningMode
from workflows import bmc_calls, patches
from workflows.inband import (
    CONFIGDRIVE_PATCH,
    VMEDIA_EJECT_PATCH,
    cleanup_boot,
    eject_media,
    remove_configdrives,
    run_on_host,
)
from workflows.options import AGENT_SHORT_TIMEOUT, ERASE_HEARTBEAT, ERASE_TIMEOUT, LOCAL_RETRY
from workflows.prechecks import check_root_device_hints, check_software_raid

with workflow.unsafe.imports_passed_through():
    from metalflow.api.bmc_address import parse_bmc_address


@workflow.defn(name=CLEAN_HOST)
class CleanHost:
    @workflow.run
    async def run(self, step: StepInput) -> StepResult:
        patches.baseline(step.baseline)
        powered_on = step.powered_on
        deprovisioning = step.purpose == "deprovision"
        erasure = []
        if not deprovisioning:  # hints or RAID volumes the disks cannot take: fail before cleaning
            check_root_device_hints(step)
            check_software_raid(step)
        elif step.node is not None:  # a joined host leaves its cluster before its disk is wiped
            await drain_and_delete_node(step)
        if step.spec.automated_cleaning_mode != CleaningMode.DISABLED:
            erase = step.spec.erase
            mode = "erase" if erase is not None else step.spec.automated_cleaning_mode.value
            cleaned = await run_on_host(
                step.ref,
                step.spec,
                AGENT_CLEAN,
                CleanRequest(
                    mode=mode,
                    erase=erase,
                    software_raid=step.spec.raid.software_raid_volumes if step.spec.raid else None,
                ),
                CleanResult,
                purpose=BootPurpose.CLEAN,
                powered_on=powered_on,
                # A provisioned host runs its own OS, never our agent: always boot the ramdisk.
                fast_track=not deprovisioning,
                ramdisk_timeout=timedelta(seconds=step.ramdisk_boot_timeout_seconds),
                start_to_close=AGENT_SHORT_TIMEOUT if erase is None else ERASE_TIMEOUT,
                heartbeat=None if erase is None else ERASE_HEARTBEAT,
                summary=f"clean disks ({mode if erase is None else 'erase: ' + erase.method.value})",
                system_uuid=step.system_uuid,
            )
            erasure = cleaned.erasure
            powered_on = True
        if deprovisioning:
            powered_on = await bmc_calls.power(step.spec, PowerAction.OFF)
            await cleanup_boot(step.ref)
            if patches.patched(CONFIGDRIVE_PATCH):  # any drive an interrupted deploy left behind
                await remove_configdrives(step.ref)
            address = parse_bmc_address(step.spec.bmc.address, step.spec.bmc.disable_certificate_verification)
            if address.virtual_media and patches.patched(VMEDIA_EJECT_PATCH):
                await eject_media(step.spec)  # its ISO was deleted with the boot entries
        return StepResult(powered_on=powered_on, erasure=erasure)


async def drain_and_delete_node(step: StepInput) -> None:
    """Cordon, evict and delete the Node the host joined as (status.node). Hosts joined before
    status.node existed carry none, so their histories never reach this call."""
    assert step.node is not None
    timeout = step.spec.join.drain_timeout_seconds if step.spec.join else 900
    await workflow.execute_activity(
        KUBEADM_LEAVE,
        LeaveRequest(host=step.ref, node=step.node, drain_timeout_seconds=timeout),
        result_type=LeaveResult,
        start_to_close_timeout=timedelta(seconds=timeout + 120),
        heartbeat_timeout=timedelta(seconds=60),
        retry_policy=LOCAL_RETRY,
        summary=f"drain and delete Node {step.node.name}",
    )
