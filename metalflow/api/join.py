"""Cluster-join contracts: the kubeadm activities and their payloads (references only)."""

from __future__ import annotations

from pydantic import Field

from metalflow.api.models import (
    HostRef,
    JoinedNode,
    JoinSpec,
    Model,
    SecretRef,
    Taint,
)

KUBEADM_PREPARE_JOIN = "kubeadm.prepare_join"
KUBEADM_WAIT_NODE = "kubeadm.wait_node"
KUBEADM_CLEANUP = "kubeadm.cleanup"
KUBEADM_LEAVE = "kubeadm.leave"


# ---- kubeadm join ----
class JoinRequest(Model):
    host: HostRef
    join: JoinSpec
    user_data: SecretRef | None = None
    taints: list[Taint] = Field(default_factory=list)  # metal3's spec.taints, put on the Node


class JoinPlan(Model):
    """References only: the token lives in its Secret, the merged user-data in another."""

    token_secret: SecretRef
    user_data: SecretRef
    ca_cert_hash: str
    api_server_endpoint: str


class WaitNodeRequest(Model):
    host: HostRef
    join: JoinSpec
    token_secret: SecretRef | None = None


class NodeInfo(Model):
    name: str
    ready: bool
    provider_id: str


# ---- leaving the cluster (deprovisioning) ----
class LeaveRequest(Model):
    """Drain and delete the Node a host joined as (status.node), before its disk is cleaned."""

    host: HostRef
    node: JoinedNode
    drain_timeout_seconds: int = 900


class LeaveResult(Model):
    evicted: list[str] = Field(default_factory=list)  # namespace/name of each pod evicted
    left_alone: list[str] = Field(default_factory=list)  # DaemonSet and mirror pods, as kubectl drain
    deleted: bool = False  # False: no such Node (already gone, or another machine's now)
