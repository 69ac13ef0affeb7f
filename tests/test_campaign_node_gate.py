"""A campaign's Node gate for joined hosts (activities/node_gate.py) against the real control plane:
the Node is cordoned and drained before the servicing reboot (and not deleted), and uncordoned
only once the kubelet reports it Ready again. No kubelet runs here (tests/test_kubeadm_leave.py
says how its part is played); the Node is registered through the bootstrap CSR flow.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from fixtures.kubeapi import KubeCluster, wait_until
from kubernetes import client as k8s
from temporalio.testing import ActivityEnvironment
from test_kubeadm_leave import NS, KubeletStandIn, bootstrap_token, joined, node_pods, pod

from activities.kubeadm import HOST_LABEL, provider_id
from activities.node_gate import drain_node, uncordon_when_ready
from metalflow.api.join import LeaveRequest, NodeInfo
from metalflow.api.models import HostRef


def set_ready(core: k8s.CoreV1Api, node: str, status: str) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = {
        "type": "Ready",
        "status": status,
        "reason": "Test",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    core.patch_node_status(node, {"status": {"conditions": [ready]}})


async def test_the_node_is_drained_before_and_uncordoned_only_once_ready_again(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    with kube_cluster.admin_client() as api:
        await gate_checks(kube_cluster, k8s.CoreV1Api(api), tmp_path)


async def gate_checks(kube_cluster: KubeCluster, core: k8s.CoreV1Api, tmp_path: Path) -> None:
    host = HostRef(namespace="rack-1", name=f"gate-{uuid.uuid4().hex[:6]}")
    node = host.name
    await asyncio.to_thread(
        kube_cluster.control_plane.register_node, bootstrap_token(core), node, provider_id(host)
    )
    core.patch_node(node, {"metadata": {"labels": {HOST_LABEL: host.host_id}}})
    core.create_namespaced_pod(NS, pod(f"web-{node}", node))
    req = LeaveRequest(host=host, node=joined(kube_cluster, tmp_path, host), drain_timeout_seconds=60)
    with KubeletStandIn(core, node):
        await asyncio.to_thread(ActivityEnvironment().run, drain_node, req)
    assert core.read_node(node).spec.unschedulable is True  # cordoned, and still there
    assert node_pods(core, node) == set()

    # the servicing reboot: the kubelet reports NotReady; the gate waits, the Node stays cordoned
    set_ready(core, node, "False")
    heartbeats: list[str] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: heartbeats.append(str(details[0]))
    out: list[NodeInfo] = []
    waiting = threading.Thread(target=lambda: out.append(env.run(uncordon_when_ready, req)))
    waiting.start()
    await asyncio.to_thread(wait_until, lambda: heartbeats, 30, "the gate to report the Node not Ready")
    assert f"Node {node}: Ready=False" in heartbeats[0], heartbeats
    assert core.read_node(node).spec.unschedulable is True, "uncordoned while not Ready"
    set_ready(core, node, "True")
    await asyncio.to_thread(waiting.join, 30)
    assert out == [NodeInfo(name=node, ready=True, provider_id=provider_id(host))]
    assert not core.read_node(node).spec.unschedulable
