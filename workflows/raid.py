"""ConfigureRAID: apply spec.raid while preparing, as metal3 does.

Runs before CleanHost when the spec asks for RAID volumes (the `raid_requested` guard in
metalflow/api/states.py; after it in histories from before RAID_BEFORE_CLEANING), so cleaning
wipes what the new volumes hold, and a host whose driver cannot build them fails preparing with
the driver's reason in status and never reaches available, let alone a deploy without its RAID.
Hardware volumes are the BMC's (Redfish Storage/Volumes); software volumes the agent's (mdadm, in
the ramdisk), checked against the inventory first.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from metalflow.api.agent import AGENT_SOFTWARE_RAID, SoftwareRAIDRequest, SoftwareRAIDResult
from metalflow.api.boot import BootPurpose
from metalflow.api.host import CONFIGURE_RAID, StepInput, StepResult
from workflows import bmc_calls, patches
from workflows.inband import run_on_host
from workflows.options import AGENT_SHORT_TIMEOUT
from workflows.prechecks import SOFTWARE_RAID_PATCH, check_software_raid


@workflow.defn(name=CONFIGURE_RAID)
class ConfigureRAID:
    @workflow.run
    async def run(self, step: StepInput) -> StepResult:
        patches.baseline(step.baseline)
        raid = step.spec.raid
        software = raid.software_raid_volumes if raid else None
        # before the agent built software RAID, the BMC activity refused it: those histories replay so
        if software and patches.patched(SOFTWARE_RAID_PATCH):
            check_software_raid(step)
            result = await run_on_host(
                step.ref,
                step.spec,
                AGENT_SOFTWARE_RAID,
                SoftwareRAIDRequest(volumes=software),
                SoftwareRAIDResult,
                purpose=BootPurpose.CLEAN,
                powered_on=step.powered_on,
                ramdisk_timeout=timedelta(seconds=step.ramdisk_boot_timeout_seconds),
                start_to_close=AGENT_SHORT_TIMEOUT,
                summary=f"build {len(software)} software RAID volume(s) with mdadm",
                system_uuid=step.system_uuid,
            )
            workflow.logger.info("software RAID: %s", ", ".join(a.device for a in result.arrays))
            return StepResult(powered_on=True)
        await bmc_calls.configure_raid(step.spec)
        return StepResult(powered_on=step.powered_on)
