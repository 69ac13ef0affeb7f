"""JoinCluster: kubeadm join of a provisioned host. Not built yet (issue 6): fails honestly."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from metalflow.contracts import JOIN_CLUSTER, StepInput, StepResult


@workflow.defn(name=JOIN_CLUSTER)
class JoinCluster:
    @workflow.run
    async def run(self, step: StepInput) -> StepResult:
        raise ApplicationError(
            "spec.join is set but the kubeadm join step is not implemented yet; "
            "remove spec.join to provision without joining a cluster",
            type="NotImplemented",
            non_retryable=True,
        )
