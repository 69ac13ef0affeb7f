"""PowerOffHost: stop a running workload before the host is deleted."""

from __future__ import annotations

from temporalio import workflow

from metalflow.api.bmc import PowerAction
from metalflow.api.host import POWER_OFF_HOST, StepInput, StepResult
from workflows import bmc_calls, patches


@workflow.defn(name=POWER_OFF_HOST)
class PowerOffHost:
    @workflow.run
    async def run(self, step: StepInput) -> StepResult:
        patches.baseline(step.baseline)
        return StepResult(powered_on=await bmc_calls.power(step.spec, PowerAction.SOFT_OFF))
