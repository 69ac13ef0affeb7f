"""Cluster-join contracts: the kubeadm activities and their payloads (references only)."""

from __future__ import annotations

from pydantic import Field

from metalflow.api.models import (
    HostRef,
    JoinSpec,
    Model,
    SecretRef,
    Taint,
)

KUBEADM_PREPARE_JOIN = "kubeadm.prepare_join"
KUBEADM_WAIT_NODE = "kubeadm.wait_node"
KUBEADM_CLEANUP = "kubeadm.cleanup"


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
