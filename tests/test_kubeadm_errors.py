"""kubeadm activities' failure modes: an unreachable cluster is retried, a Node that never turns
Ready ends with the last conditions seen."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest
from fixtures.kubeapi import KubeCluster
from kubernetes import client as k8s
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kubeadm import prepare_join, wait_node
from metalflow.api.join import JoinRequest, WaitNodeRequest
from metalflow.api.models import HostRef, JoinSpec, SecretRef
from testbed.datacenter import write_secret
from testbed.processes import free_port

REF = HostRef(name="w0")


def join_spec(tmp_path: Path, kubeconfig_text: str, timeout: int = 1800) -> JoinSpec:
    secret = tmp_path / "target.yaml"
    write_secret(secret, {"kubeconfig": kubeconfig_text})
    return JoinSpec(kubeconfig=SecretRef(name="target", path=str(secret)), timeout_seconds=timeout)


async def test_unreachable_cluster_is_a_retryable_failure(tmp_path: Path) -> None:
    port = free_port()
    kubeconfig = (
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        f"clusters: [{{name: x, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: x, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: x, user: x}}]\n"
    )
    req = JoinRequest(host=REF, join=join_spec(tmp_path, kubeconfig))
    server = re.escape(f"cannot reach the target cluster http://127.0.0.1:{port}")
    with pytest.raises(ApplicationError, match=f"{server}: .*Connection refused") as err:
        await asyncio.to_thread(ActivityEnvironment().run, prepare_join, req)
    # typed, and not non-retryable: Temporal retries it with backoff
    assert err.value.type == "ClusterUnreachable" and not err.value.non_retryable


# what a kubelet says when no CNI network is configured (the VM e2e sees the real one)
CNI_MISSING = (
    "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
    "message:Network plugin returns error: cni plugin not initialized"
)


async def test_node_never_ready_reports_its_conditions(tmp_path: Path, kube_cluster: KubeCluster) -> None:
    name = f"w0-{uuid.uuid4().hex[:6]}"  # Nodes are cluster-wide: the session's API server is shared
    with kube_cluster.admin_client() as c:
        core = k8s.CoreV1Api(c)
        await asyncio.to_thread(core.create_node, k8s.V1Node(metadata=k8s.V1ObjectMeta(name=name)))
        conditions = [
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": CNI_MISSING},
            {"type": "DiskPressure", "status": "True", "reason": "KubeletHasDiskPressure"},
        ]
        await asyncio.to_thread(core.patch_node_status, name, {"status": {"conditions": conditions}})
    try:
        ref = HostRef(name=name)
        kc = kube_cluster.join_kubeconfig
        req = WaitNodeRequest(host=ref, join=join_spec(tmp_path, kc.read_text(), timeout=3))
        beats: list[object] = []
        env = ActivityEnvironment()
        env.on_heartbeat = lambda *d: beats.extend(d)
        with pytest.raises(ApplicationError) as err:
            await asyncio.to_thread(env.run, wait_node, req)
    finally:
        with kube_cluster.admin_client() as c:
            await asyncio.to_thread(k8s.CoreV1Api(c).delete_node, name)
    assert err.value.type == "NodeNotReady" and err.value.non_retryable
    assert f"Ready=False (KubeletNotReady: {CNI_MISSING})" in err.value.message, err.value.message
    assert "DiskPressure=True (KubeletHasDiskPressure)" in err.value.message
    assert beats, "waiting heartbeats so a lost worker is noticed"
