"""A campaign's Node gate for hosts that joined a cluster (status.node): drained before their
servicing reboot, and after it, uncordoned once the kubelet reports the Node Ready again.

The drain is the deprovisioning drain's (activities/kubeadm.py: cordon, Eviction API,
PodDisruptionBudgets honoured, DaemonSet and mirror pods left), without deleting the Node. A Node
of that name that is not the host's is left alone, as there.
"""

from __future__ import annotations

import time

from kubernetes import client as k8s
from temporalio import activity

from activities.kubeadm import _cluster, _ready, drain, host_node
from metalflow.api.campaign import CAMPAIGN_NODE_DRAIN, CAMPAIGN_NODE_READY
from metalflow.api.join import LeaveRequest, LeaveResult, NodeInfo

POLL_SECONDS = 2.0


@activity.defn(name=CAMPAIGN_NODE_DRAIN)
def drain_node(req: LeaveRequest) -> LeaveResult:
    with _cluster(req.node.kubeconfig) as api:
        core = k8s.CoreV1Api(api)
        if host_node(core, req) is None:
            return LeaveResult()
        result = drain(core, req.node.name, req.drain_timeout_seconds)
    activity.logger.info("Node %s cordoned and drained (%d pods evicted)", req.node.name, len(result.evicted))
    return result


@activity.defn(name=CAMPAIGN_NODE_READY)
def uncordon_when_ready(req: LeaveRequest) -> NodeInfo:
    """Wait until the Node is Ready (the activity's timeout is the campaign's health gate), then
    make it schedulable again."""
    with _cluster(req.node.kubeconfig) as api:
        core = k8s.CoreV1Api(api)
        while True:
            node = host_node(core, req)
            if node is None:
                return NodeInfo(name=req.node.name, ready=False, provider_id=req.node.provider_id)
            ready, why = _ready(node)
            if ready:
                break
            activity.heartbeat(f"Node {req.node.name}: {why}")
            time.sleep(POLL_SECONDS)  # the kubelet's report, in the target cluster
        core.patch_node(req.node.name, {"spec": {"unschedulable": False}})
    return NodeInfo(name=req.node.name, ready=True, provider_id=req.node.provider_id)


ACTIVITIES = [drain_node, uncordon_when_ready]
