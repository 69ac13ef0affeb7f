"""JoinCluster: wait for the provisioned host's kubelet to join, then retire its token.

The join itself happens on the host (cloud-init runs `kubeadm join` from the user-data that
DeployHost staged); this step watches the target cluster for the Node to turn Ready.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from metalflow.api.host import JOIN_CLUSTER, StepInput, StepResult
from metalflow.api.join import KUBEADM_CLEANUP, KUBEADM_WAIT_NODE, NodeInfo, WaitNodeRequest
from metalflow.api.models import JoinedNode
from workflows import patches
from workflows.options import LOCAL_RETRY, LOCAL_TIMEOUT


@workflow.defn(name=JOIN_CLUSTER)
class JoinCluster:
    @workflow.run
    async def run(self, step: StepInput) -> StepResult:
        patches.baseline(step.baseline)
        join = step.spec.join
        if join is None:
            raise ApplicationError("JoinCluster needs spec.join", non_retryable=True)
        req = WaitNodeRequest(host=step.ref, join=join, token_secret=step.join_token)
        node = await workflow.execute_activity(
            KUBEADM_WAIT_NODE,
            req,
            result_type=NodeInfo,
            start_to_close_timeout=timedelta(seconds=join.timeout_seconds + 120),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=LOCAL_RETRY,
            summary=f"wait for Node {step.ref.name} Ready",
        )
        await workflow.execute_activity(
            KUBEADM_CLEANUP,
            req,
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
            summary="delete the bootstrap token",
        )
        joined = JoinedNode(name=node.name, provider_id=node.provider_id, kubeconfig=join.kubeconfig)
        return StepResult(powered_on=step.powered_on, node=joined)
