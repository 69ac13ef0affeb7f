"""ConfigureRAID: apply spec.raid while preparing, as metal3 does.

Runs after CleanHost when the spec asks for RAID volumes (the `raid_requested` guard in
metalflow/api/states.py), so a host whose driver cannot build them fails preparing with the
driver's reason in status and never reaches available, let alone a deploy without its RAID.
"""

from __future__ import annotations

from temporalio import workflow

from metalflow.api.host import CONFIGURE_RAID, StepInput, StepResult
from workflows import bmc_calls


@workflow.defn(name=CONFIGURE_RAID)
class ConfigureRAID:
    @workflow.run
    async def run(self, step: StepInput) -> StepResult:
        await bmc_calls.configure_raid(step.spec)
        return StepResult(powered_on=step.powered_on)
