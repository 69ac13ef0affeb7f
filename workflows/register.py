"""RegisterHost: prove the BMC credentials work and learn the power state."""

from __future__ import annotations

from temporalio import workflow

from metalflow.api.bmc import BMC_VALIDATE, BMCValidation
from metalflow.api.host import REGISTER_HOST, StepInput, StepResult
from workflows.bmc_calls import target_of
from workflows.options import BMC_HEARTBEAT, BMC_RETRY, BMC_TIMEOUT


@workflow.defn(name=REGISTER_HOST)
class RegisterHost:
    @workflow.run
    async def run(self, step: StepInput) -> StepResult:
        checked = await workflow.execute_activity(
            BMC_VALIDATE,
            target_of(step.spec),
            result_type=BMCValidation,
            start_to_close_timeout=BMC_TIMEOUT,
            heartbeat_timeout=BMC_HEARTBEAT,
            retry_policy=BMC_RETRY,
            summary=f"validate BMC {step.spec.bmc.address}",
        )
        return StepResult(
            powered_on=checked.powered_on,
            credentials_version=checked.credentials_version,
            bmc_driver=checked.driver_label,
        )
