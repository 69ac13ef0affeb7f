"""InspectHost: boot the deploy ramdisk and let its agent report the hardware.

spec.inspectionMode as in metal3: `agent` (or unset) is this in-band inspection; `fast` asks
the BMC alone (Redfish inventory, no boot); `disabled` inspects nothing (hardware stays unset).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from metalflow.api.agent import AGENT_INVENTORY
from metalflow.api.boot import BootPurpose
from metalflow.api.host import INSPECT_HOST, StepInput, StepResult
from metalflow.api.models import HardwareDetails, InspectionMode
from workflows import bmc_calls, patches
from workflows.inband import boot_ramdisk, run_on_host
from workflows.options import AGENT_SHORT_TIMEOUT

INSPECTION_MODE_PATCH = "inspection-mode"


@workflow.defn(name=INSPECT_HOST)
class InspectHost:
    @workflow.run
    async def run(self, step: StepInput) -> StepResult:
        patches.baseline(step.baseline)
        mode = step.spec.inspection_mode
        if mode in (InspectionMode.DISABLED, InspectionMode.FAST) and patches.patched(INSPECTION_MODE_PATCH):
            if mode == InspectionMode.DISABLED:
                return StepResult(powered_on=step.powered_on, hardware=None)
            return StepResult(powered_on=step.powered_on, hardware=await bmc_calls.inventory(step.spec))
        # Inspection always boots a fresh ramdisk: whatever runs now may be a stale image.
        await boot_ramdisk(step.ref, step.spec, BootPurpose.INSPECT, step.powered_on, step.system_uuid)
        hardware = await run_on_host(
            step.ref,
            step.spec,
            AGENT_INVENTORY,
            None,
            HardwareDetails,
            purpose=BootPurpose.INSPECT,
            powered_on=True,
            ramdisk_timeout=timedelta(seconds=step.ramdisk_boot_timeout_seconds),
            start_to_close=AGENT_SHORT_TIMEOUT,
            summary="collect hardware inventory (in-band)",
            system_uuid=step.system_uuid,
        )
        return StepResult(powered_on=True, hardware=hardware)
