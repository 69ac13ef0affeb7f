"""DeployHost: write the image and config drive in-band, then boot the host from its disk."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from metalflow.api.agent import (
    AGENT_CUSTOM_DEPLOY,
    AGENT_WRITE_CONFIGDRIVE,
    AGENT_WRITE_IMAGE,
    CustomDeployRequest,
    WriteConfigDriveRequest,
    WriteImageRequest,
    WriteImageResult,
)
from metalflow.api.bmc import BMC_EJECT_MEDIA, BootDevice, BootSetting, MediaRequest, PowerAction
from metalflow.api.boot import BootPurpose
from metalflow.api.configdrive import CONFIGDRIVE_STAGE, ConfigDriveRequest, ConfigDriveStaged
from metalflow.api.host import DEPLOY_HOST, StepInput, StepResult
from metalflow.api.join import KUBEADM_PREPARE_JOIN, JoinPlan, JoinRequest
from metalflow.api.oci import (
    DEFAULT_ARCHITECTURE,
    OCI_PATCH,
    OCI_REMOVE,
    OCI_STAGE,
    OciRemove,
    OciStaged,
    OciStageRequest,
    write_request,
)
from workflows import bmc_calls, patches
from workflows.control_calls import control_call
from workflows.inband import CONFIGDRIVE_PATCH, cleanup_boot, remove_configdrives, run_on_host
from workflows.options import (
    AGENT_SHORT_TIMEOUT,
    BMC_HEARTBEAT,
    BMC_RETRY,
    BMC_TIMEOUT,
    IMAGE_WRITE_HEARTBEAT,
    IMAGE_WRITE_TIMEOUT,
    LOCAL_RETRY,
)
from workflows.prechecks import check_network_data, check_root_device_hints, check_software_raid

with workflow.unsafe.imports_passed_through():
    from metalflow.api.bmc_address import parse_bmc_address


CUSTOM_DEPLOY_PATCH = "custom-deploy"


@workflow.defn(name=DEPLOY_HOST)
class DeployHost:
    @workflow.run
    async def run(self, step: StepInput) -> StepResult:
        patches.baseline(step.baseline)
        spec = step.spec
        custom = spec.custom_deploy is not None and patches.patched(CUSTOM_DEPLOY_PATCH)
        if spec.image is None and not custom:
            raise ApplicationError("DeployHost needs spec.image", non_retryable=True)
        check_root_device_hints(step)
        check_software_raid(step)
        await check_network_data(step)
        ramdisk_timeout = timedelta(seconds=step.ramdisk_boot_timeout_seconds)
        request: CustomDeployRequest | WriteImageRequest
        oci: OciStaged | None = None
        if custom and spec.custom_deploy is not None:  # metal3's customDeploy: the agent's named method
            activity_name, summary = AGENT_CUSTOM_DEPLOY, f"deploy method {spec.custom_deploy.method}"
            request = CustomDeployRequest(
                method=spec.custom_deploy.method, image=spec.image, root_device_hints=spec.root_device_hints
            )
        else:
            assert spec.image is not None
            activity_name = AGENT_WRITE_IMAGE
            request = WriteImageRequest(image=spec.image, root_device_hints=spec.root_device_hints)
            # oci:// URLs were refused before this branch existed, so no older history reaches it
            if spec.image.url.startswith("oci://") and patches.patched(OCI_PATCH):
                oci = await self._stage_oci(step)
                request = write_request(oci, spec.root_device_hints)
            summary = f"write image {oci.resolved.pinned_url if oci else spec.image.url}"
        if spec.raid is not None and spec.raid.software_raid_volumes:  # the image goes to an md array
            request = request.model_copy(update={"software_raid": spec.raid.software_raid_volumes})
            summary += " to software RAID"
        try:
            written = await run_on_host(
                step.ref,
                spec,
                activity_name,
                request,
                WriteImageResult,
                purpose=BootPurpose.DEPLOY,
                powered_on=step.powered_on,
                ramdisk_timeout=ramdisk_timeout,
                start_to_close=IMAGE_WRITE_TIMEOUT,
                heartbeat=IMAGE_WRITE_HEARTBEAT,
                summary=summary,
                system_uuid=step.system_uuid,
            )
        finally:
            if oci is not None:
                await workflow.execute_activity(
                    OCI_REMOVE,
                    OciRemove(host=step.ref, attempt=workflow.info().run_id),
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=LOCAL_RETRY,
                    summary="withdraw the image blob's grant from the boot server",
                )
        user_data, join_token = spec.user_data, None
        if spec.join is not None:
            plan = await workflow.execute_activity(
                KUBEADM_PREPARE_JOIN,
                JoinRequest(host=step.ref, join=spec.join, user_data=spec.user_data, taints=spec.taints),
                result_type=JoinPlan,
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=LOCAL_RETRY,
                summary="bootstrap token + kubeadm join user-data",
            )
            user_data, join_token = plan.user_data, plan.token_secret
        # A drive per attempt (this run), on the boot server only until it is on the disk.
        per_attempt = patches.patched(CONFIGDRIVE_PATCH)
        attempt = workflow.info().run_id if per_attempt else ""
        try:
            staged = await control_call(
                CONFIGDRIVE_STAGE,
                ConfigDriveRequest(
                    host=step.ref,
                    user_data=user_data,
                    network_data=spec.network_data,
                    meta_data=spec.meta_data,
                    attempt=attempt,
                ),
                result_type=ConfigDriveStaged,
                timeout=timedelta(minutes=2),
                summary="build config drive (user-data stays out of history)",
            )
            await run_on_host(
                step.ref,
                spec,
                AGENT_WRITE_CONFIGDRIVE,
                WriteConfigDriveRequest(device=written.device, config_drive=staged),
                type(None),
                purpose=BootPurpose.DEPLOY,
                powered_on=True,
                ramdisk_timeout=ramdisk_timeout,
                start_to_close=AGENT_SHORT_TIMEOUT,
                summary=f"write config drive to {written.device}",
                system_uuid=step.system_uuid,
            )
        finally:
            if per_attempt:
                await remove_configdrives(step.ref, attempt)
        # Redfish "once" overrides read back as continuous on some BMCs: set disk explicitly
        # (with the power action below, in one BMC call; histories before: here, a call of its own).
        with_power = patches.patched(bmc_calls.BOOT_WITH_POWER_PATCH)
        if not with_power:
            await bmc_calls.set_boot_device(spec, BootDevice.DISK, persistent=True)
        await cleanup_boot(step.ref)
        if parse_bmc_address(spec.bmc.address, spec.bmc.disable_certificate_verification).virtual_media:
            await workflow.execute_activity(
                BMC_EJECT_MEDIA,
                MediaRequest(target=bmc_calls.target_of(spec)),
                start_to_close_timeout=BMC_TIMEOUT,
                heartbeat_timeout=BMC_HEARTBEAT,
                retry_policy=BMC_RETRY,
                summary="eject deploy ISO",
            )
        action = PowerAction.REBOOT if spec.online else PowerAction.OFF
        disk = BootSetting(device=BootDevice.DISK, persistent=True, boot_mode=spec.boot_mode)
        powered_on = await bmc_calls.power(spec, action, disk if with_power else None)
        return StepResult(
            powered_on=powered_on,
            image=spec.image,
            image_digest=oci.resolved.pinned_url if oci else "",
            root_device=written.device,
            bytes_written=written.bytes_written,
            join_token=join_token,
        )

    async def _stage_oci(self, step: StepInput) -> OciStaged:
        """Resolve the oci:// image in the control plane and grant its one blob to this attempt."""
        assert step.spec.image is not None
        # spec.architecture (metal3's field) wins over what inspection found, as for the ramdisk
        inspected = step.hardware.cpu.arch if step.hardware else ""
        arch = step.spec.architecture or inspected or DEFAULT_ARCHITECTURE
        return await workflow.execute_activity(
            OCI_STAGE,
            OciStageRequest(
                host=step.ref, image=step.spec.image, architecture=arch, attempt=workflow.info().run_id
            ),
            result_type=OciStaged,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=LOCAL_RETRY,
            summary=f"resolve {step.spec.image.url}",
        )
