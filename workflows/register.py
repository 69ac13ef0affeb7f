"""RegisterHost: prove the BMC credentials work and learn the power state and system UUID."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from metalflow.api.bmc import BMC_VALIDATE, BMCValidation
from metalflow.api.errors import ErrorName
from metalflow.api.host import REGISTER_HOST, StepInput, StepResult
from workflows import patches
from workflows.bmc_calls import target_of
from workflows.options import BMC_HEARTBEAT, BMC_RETRY, BMC_TIMEOUT


@workflow.defn(name=REGISTER_HOST)
class RegisterHost:
    @workflow.run
    async def run(self, step: StepInput) -> StepResult:
        patches.baseline(step.baseline)
        checked = await workflow.execute_activity(
            BMC_VALIDATE,
            target_of(step.spec),
            result_type=BMCValidation,
            start_to_close_timeout=BMC_TIMEOUT,
            heartbeat_timeout=BMC_HEARTBEAT,
            retry_policy=BMC_RETRY,
            summary=f"validate BMC {step.spec.bmc.address}",
        )
        if step.system_uuid and checked.system_uuid and checked.system_uuid != step.system_uuid:
            # A host known by its UUID (it may have no MAC) now answers with another one: a
            # different machine behind this BMC address, or a board swap. Never guess.
            raise ApplicationError(
                f"the BMC at {step.spec.bmc.address} now reports system UUID {checked.system_uuid}, "
                f"but this host registered as {step.system_uuid}: if the machine was replaced, "
                "delete and re-create the host; otherwise fix spec.bmc.address",
                type=ErrorName.SYSTEM_UUID_CHANGED.value,
                non_retryable=True,
            )
        return StepResult(
            powered_on=checked.powered_on,
            credentials_version=checked.credentials_version,
            bmc_driver=checked.driver_label,
            system_uuid=checked.system_uuid,
        )
