"""Leaving the cluster: the deprovisioning drain (activities/kubeadm.py `leave`) against the real
control plane (API server, controller manager with its DaemonSet and disruption controllers, the
Eviction API and PodDisruptionBudgets).

No kubelet runs here: the Node is registered through the bootstrap CSR flow (ControlPlane.
register_node); the test does the kubelet's part (the guarded pod reported Running and Ready,
a pod marked for deletion removed for good) and the scheduler's (the DaemonSet's pod bound).
The VM e2e (tests/e2e/test_node_join.py) drains a real kubelet's Node.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.kubeapi import KubeCluster, wait_until
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kubeadm import HOST_LABEL, leave, provider_id
from metalflow.api.join import LeaveRequest
from metalflow.api.models import HostRef, JoinedNode, SecretRef
from testbed.datacenter import write_secret

NS = "default"


class KubeletStandIn:
    """Removes NODE's pods once they are marked for deletion, as a kubelet does once their
    containers stopped (with a grace period of 0)."""

    def __init__(self, core: k8s.CoreV1Api, node: str) -> None:
        self.core, self.node = core, node
        self.confirmed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pod in self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.node}"
            ).items:
                if pod.metadata.deletion_timestamp is None:
                    continue
                try:
                    self.core.delete_namespaced_pod(
                        pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                    )
                    self.confirmed.append(pod.metadata.name)
                except ApiException as exc:
                    if exc.status != 404:
                        raise

    def __enter__(self) -> KubeletStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def core(kube_cluster: KubeCluster) -> Iterator[k8s.CoreV1Api]:
    with kube_cluster.admin_client() as api:
        yield k8s.CoreV1Api(api)


def joined(kube_cluster: KubeCluster, tmp: Path, host: HostRef) -> JoinedNode:
    secret = tmp / "target.yaml"
    write_secret(secret, {"kubeconfig": kube_cluster.join_kubeconfig.read_text()})
    return JoinedNode(
        name=host.name, provider_id=provider_id(host), kubeconfig=SecretRef(name="target", path=str(secret))
    )


def pod(name: str, node: str, labels: dict[str, str] | None = None) -> k8s.V1Pod:
    container = k8s.V1Container(name="app", image="example.invalid/app")  # never pulled: no kubelet
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        spec=k8s.V1PodSpec(node_name=node, containers=[container]),
    )


def node_pods(core: k8s.CoreV1Api, node: str) -> set[str]:
    return {
        p.metadata.name
        for p in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    }


async def test_drain_evicts_honours_the_disruption_budget_keeps_daemonset_pods_and_deletes_the_node(
    kube_cluster: KubeCluster, core: k8s.CoreV1Api, tmp_path: Path
) -> None:
    host = HostRef(namespace="rack-1", name=f"leave-{uuid.uuid4().hex[:6]}")
    node = host.name
    cp = kube_cluster.control_plane
    token = bootstrap_token(core)
    await asyncio.to_thread(cp.register_node, token, node, provider_id(host))
    core.patch_node(node, {"metadata": {"labels": {HOST_LABEL: host.host_id}}})
    apps, policy = k8s.AppsV1Api(core.api_client), k8s.PolicyV1Api(core.api_client)
    # a DaemonSet for this Node only: its controller puts a pod there, and the drain leaves it
    ds = k8s.V1DaemonSet(
        metadata=k8s.V1ObjectMeta(name=f"agent-{node}"),
        spec=k8s.V1DaemonSetSpec(
            selector=k8s.V1LabelSelector(match_labels={"ds": node}),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels={"ds": node}),
                spec=k8s.V1PodSpec(
                    node_selector={HOST_LABEL: host.host_id},
                    containers=[k8s.V1Container(name="agent", image="example.invalid/agent")],
                ),
            ),
        ),
    )
    apps.create_namespaced_daemon_set(NS, ds)
    ds_pod = await asyncio.to_thread(
        wait_until,
        lambda: next(
            (p.metadata.name for p in core.list_namespaced_pod(NS, label_selector=f"ds={node}").items), None
        ),
        60,
        "the DaemonSet controller to make a pod for the Node",
    )
    # the scheduler's part (none runs here): bind the pod to the Node its affinity names
    target = k8s.V1ObjectReference(kind="Node", name=node)
    core.create_namespaced_pod_binding(
        ds_pod,
        NS,
        k8s.V1Binding(metadata=k8s.V1ObjectMeta(name=ds_pod), target=target),
        _preload_content=False,
    )
    core.create_namespaced_pod(NS, pod(f"web-{node}", node))
    core.create_namespaced_pod(NS, pod(f"db-{node}", node, {"app": f"db-{node}"}))
    # the kubelet's report: running and ready (a Pending pod may be evicted whatever the budget)
    running = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    core.patch_namespaced_pod_status(f"db-{node}", NS, {"status": running})
    pdb = k8s.V1PodDisruptionBudget(
        metadata=k8s.V1ObjectMeta(name=f"db-{node}"),
        spec=k8s.V1PodDisruptionBudgetSpec(
            min_available=1, selector=k8s.V1LabelSelector(match_labels={"app": f"db-{node}"})
        ),
    )
    policy.create_namespaced_pod_disruption_budget(NS, pdb)

    # the disruption controller must have counted the pod before the budget protects it
    def counted() -> bool:
        status = policy.read_namespaced_pod_disruption_budget(f"db-{node}", NS).status
        return bool(status and status.current_healthy == 1 and status.disruptions_allowed == 0)

    await asyncio.to_thread(wait_until, counted, 60, "the disruption controller to count the guarded pod")
    req = LeaveRequest(host=host, node=joined(kube_cluster, tmp_path, host), drain_timeout_seconds=8)
    env = ActivityEnvironment()
    try:
        with KubeletStandIn(core, node) as kubelet:
            with pytest.raises(ApplicationError) as err:
                await asyncio.to_thread(env.run, leave, req)
            assert err.value.type == "NodeDrainTimeout" and err.value.non_retryable
            assert f"{NS}/db-{node} (eviction refused: " in err.value.message, err.value.message
            assert (
                "disruption budget" in err.value.message
                and "spec.join.drainTimeoutSeconds" in err.value.message
            )
            assert f"web-{node}" in kubelet.confirmed, "the unprotected pod was not evicted"
            assert core.read_node(node).spec.unschedulable, "not cordoned"
            assert node_pods(core, node) == {f"db-{node}", ds_pod}
            # the budget lifted: the retry drains and deletes the Node
            policy.delete_namespaced_pod_disruption_budget(f"db-{node}", NS)
            result = await asyncio.to_thread(
                env.run, leave, req.model_copy(update={"drain_timeout_seconds": 60})
            )
        assert result.deleted
        assert result.evicted == [f"{NS}/db-{node}"]  # web went on the first attempt
        assert result.left_alone == [f"{NS}/{ds_pod} (DaemonSet)"]
        with pytest.raises(ApiException) as gone:
            core.read_node(node)
        assert gone.value.status == 404
        # leaving again (a retried activity) is a no-op
        assert not (await asyncio.to_thread(env.run, leave, req)).deleted
    finally:
        apps.delete_namespaced_daemon_set(f"agent-{node}", NS)
        for name in (f"web-{node}", f"db-{node}", ds_pod):
            try:
                core.delete_namespaced_pod(name, NS, grace_period_seconds=0)
            except ApiException:
                pass


async def test_a_node_of_that_name_that_is_another_machines_is_left_alone(
    kube_cluster: KubeCluster, core: k8s.CoreV1Api, tmp_path: Path
) -> None:
    host = HostRef(namespace="rack-1", name=f"reused-{uuid.uuid4().hex[:6]}")
    other = k8s.V1Node(
        metadata=k8s.V1ObjectMeta(name=host.name), spec=k8s.V1NodeSpec(provider_id="aws:///eu-west-1a/i-0abc")
    )
    core.create_node(other)
    try:
        req = LeaveRequest(host=host, node=joined(kube_cluster, tmp_path, host), drain_timeout_seconds=5)
        result = await asyncio.to_thread(ActivityEnvironment().run, leave, req)
        assert not result.deleted
        left = core.read_node(host.name)
        assert not left.spec.unschedulable, "another machine's Node was cordoned"
    finally:
        core.delete_node(host.name)


def bootstrap_token(core: k8s.CoreV1Api) -> str:
    """A fresh bootstrap token in kube-system, for the CSR flow register_node goes through."""
    token_id, secret = uuid.uuid4().hex[:6], uuid.uuid4().hex[:16]
    body = k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name=f"bootstrap-token-{token_id}", namespace="kube-system"),
        type="bootstrap.kubernetes.io/token",
        string_data={
            "token-id": token_id,
            "token-secret": secret,
            "expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)),
            "usage-bootstrap-authentication": "true",
            "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
        },
    )
    core.create_namespaced_secret("kube-system", body)
    return f"{token_id}.{secret}"
