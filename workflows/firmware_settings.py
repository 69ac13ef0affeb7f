"""ApplyFirmwareSettings: the host's HostFirmwareSettings, checked and applied while preparing.

The desired settings are checked against the schema the BMC's own attribute registry gives
before anything is written; only settings that differ are written (a second run writes
nothing), to the BIOS's pending set, and the host is booted so the BIOS applies them. The step
waits until the BMC reports them applied, restores the host's power, and reports the settings
the BIOS now has: metal3's HostFirmwareSettings status.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from metalflow.api.bmc import PowerAction
from metalflow.api.errors import ErrorName
from metalflow.api.firmware import (
    BIOSState,
    FirmwareSettingsStatus,
    SchemaReference,
    changes,
    setting_problems,
    typed_value,
)
from metalflow.api.host import (
    APPLY_FIRMWARE_SETTINGS,
    FIRMWARE_PUBLISH,
    FirmwareReport,
    StepInput,
    StepResult,
)
from workflows import bmc_calls, patches
from workflows.options import LOCAL_RETRY, LOCAL_TIMEOUT

# How long a BIOS may take to apply its pending settings once the host was powered on or reset
# (a real server's POST with a settings job runs for minutes).
APPLY_WAIT_SECONDS = 900


@workflow.defn(name=APPLY_FIRMWARE_SETTINGS)
class ApplyFirmwareSettings:
    @workflow.run
    async def run(self, step: StepInput) -> StepResult:
        patches.baseline(step.baseline)
        spec, powered_on = step.spec, step.powered_on
        desired = spec.firmware_settings
        state = await bmc_calls.read_bios(spec)
        problems = setting_problems(desired, state.schema_)
        await _report(step, state, problems)
        if problems:  # nothing written: every problem named at once, each with its fix
            raise ApplicationError(
                f"HostFirmwareSettings {step.ref.namespace}/{step.ref.name}: {len(problems)} invalid "
                f"setting{'s' if len(problems) > 1 else ''}: " + "; ".join(problems),
                type=ErrorName.INVALID_FIRMWARE_SETTINGS.value,
                non_retryable=True,
            )
        todo = changes(desired, state.settings, state.schema_)
        if todo:
            typed = {
                name: typed_value(value, state.schema_.attributes.get(name)) for name, value in todo.items()
            }
            await bmc_calls.apply_bios(spec, typed)
            # the BIOS applies its pending set while the host boots
            await bmc_calls.power(spec, PowerAction.REBOOT if powered_on else PowerAction.ON)
            state = await bmc_calls.read_bios(spec, expect=todo, wait_seconds=APPLY_WAIT_SECONDS)
            powered_on = True
            if not step.powered_on:
                powered_on = await bmc_calls.power(spec, PowerAction.OFF)
            await _report(step, state, [])
        return StepResult(
            powered_on=powered_on,
            firmware_settings=FirmwareSettingsStatus(
                schema_=SchemaReference(name=state.schema_.name, namespace=step.ref.namespace),
                settings=state.settings,
                last_updated=workflow.now(),
            ),
        )


async def _report(step: StepInput, state: BIOSState, problems: list[str]) -> None:
    """The host's HostFirmwareSettings status and FirmwareSchema (when it has them)."""
    await workflow.execute_activity(
        FIRMWARE_PUBLISH,
        FirmwareReport(
            host=step.ref,
            schema_=state.schema_,
            settings=state.settings,
            desired=step.spec.firmware_settings,
            problems=problems,
        ),
        start_to_close_timeout=LOCAL_TIMEOUT,
        retry_policy=LOCAL_RETRY,
        summary="publish firmware settings" + (" (invalid)" if problems else ""),
    )
