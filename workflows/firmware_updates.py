"""ApplyFirmwareUpdates: the host's HostFirmwareComponents updates, while preparing (before the
settings: new firmware may bring new settings) or by servicing.

Each update is one SimpleUpdate whose Task is followed to its end; then the host is booted so
the new firmware runs, and the versions it reports are the status (metal3's
HostFirmwareComponents status.components). A component the driver cannot target fails the step
before any update starts.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from metalflow.api.bmc import PowerAction
from metalflow.api.errors import ErrorName
from metalflow.api.firmware_components import (
    BUILT_COMPONENTS,
    FirmwareComponentsStatus,
    FirmwareComponentStatus,
)
from metalflow.api.host import (
    APPLY_FIRMWARE_UPDATES,
    COMPONENTS_PUBLISH,
    ComponentsReport,
    StepInput,
    StepResult,
)
from workflows import bmc_calls, patches
from workflows.options import LOCAL_RETRY, LOCAL_TIMEOUT

# How long one update Task may run (a BMC flashing a BIOS takes minutes, some an hour).
TASK_WAIT_SECONDS = 3600


@workflow.defn(name=APPLY_FIRMWARE_UPDATES)
class ApplyFirmwareUpdates:
    @workflow.run
    async def run(self, step: StepInput) -> StepResult:
        patches.baseline(step.baseline)
        spec, powered_on = step.spec, step.powered_on
        unbuilt = sorted({u.component for u in spec.firmware_updates} - set(BUILT_COMPONENTS))
        if unbuilt:  # nothing started: every update of the list, or none
            raise ApplicationError(
                f"HostFirmwareComponents {step.ref.namespace}/{step.ref.name}: metalflow updates "
                f"{' and '.join(BUILT_COMPONENTS)}, not {', '.join(unbuilt)}; remove those updates",
                type=ErrorName.FIRMWARE_UPDATE_FAILED.value,
                non_retryable=True,
            )
        before = await bmc_calls.firmware_versions(spec)
        for update in spec.firmware_updates:
            await bmc_calls.update_firmware(spec, update, TASK_WAIT_SECONDS)
        # the new firmware runs once the host boots again
        await bmc_calls.power(spec, PowerAction.REBOOT if powered_on else PowerAction.ON)
        if not powered_on:
            await bmc_calls.power(spec, PowerAction.OFF)
        after = await bmc_calls.firmware_versions(spec)
        flashed = {u.component for u in spec.firmware_updates}
        now = workflow.now()
        components = [
            FirmwareComponentStatus(
                component=name,
                initial_version=before.get(name, ""),
                current_version=version,
                last_version_flashed=version if name in flashed else "",
                updated_at=now if name in flashed else None,
            )
            for name, version in sorted(after.items())
        ]
        status = FirmwareComponentsStatus(
            updates=list(spec.firmware_updates), components=components, last_updated=now
        )
        await workflow.execute_activity(
            COMPONENTS_PUBLISH,
            ComponentsReport(host=step.ref, status=status),
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
            summary="publish firmware components",
        )
        return StepResult(powered_on=powered_on, firmware_components=status)
