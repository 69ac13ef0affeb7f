"""kubeadm join end to end: provision with spec.join against a target cluster (the test API
server). A kubelet stand-in reads the user-data from the config drive on the host's disk,
authenticates with the bootstrap token it finds there, and registers the Node."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pycdlib
import pytest
import yaml
from fixtures.kubeapi import KubeCluster
from history_scan import assert_no_secret_in, assert_no_secret_in_histories
from kubernetes import client as k8s
from kubernetes import config
from kubernetes.client.exceptions import ApiException
from temporalio.client import Client
from tests_support import backing_off, malformed_yaml, record

from metalflow.api.models import ErrorType, Host, HostStatus, JoinedNode, JoinSpec, SecretRef, Taint
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter, write_secret
from testbed.hosts import EmulatedHost
from worker.control import build_worker


@pytest.fixture
def target_cluster(kube_cluster: KubeCluster) -> Iterator[tuple[KubeCluster, Path, bytes]]:
    """The session's real control plane as the cluster hosts join: the kubeconfig metalflow
    gets for it (join-rbac.yaml's ServiceAccount: a permission missing there fails the test) and
    its CA; cluster-info as `kubeadm init phase bootstrap-token` published it. The Nodes a test
    registered are deleted after it."""
    yield kube_cluster, kube_cluster.join_kubeconfig, kube_cluster.control_plane.ca_pem
    with kube_cluster.admin_client() as api:
        k8s.CoreV1Api(api).delete_collection_node()


def kubeconfig_token(kubeconfig: Path) -> str:
    """The target cluster's credential in the join kubeconfig Secret (a token or a client key)."""
    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    return str(user.get("token") or user["client-key-data"])


def read_user_data(disk: Path) -> str:
    """What cloud-init would read: openstack/latest/user_data on the config-2 drive."""
    with disk.open("rb") as f:
        f.seek(disk.stat().st_size - (64 << 20))
        region = f.read(64 << 20)
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(region))
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, rr_path="/openstack/latest/user_data")
    iso.close()
    return out.getvalue().decode()


async def kubelet(emu: EmulatedHost, cluster: KubeCluster, after: int = 0) -> str:
    """Wait for the host to boot its OS (a boot after the first AFTER), then join as kubeadm's
    kubelet would, with the bootstrap token it finds in the user-data: a CSR approved and signed
    by the controller manager, then the Node registered with that certificate
    (ControlPlane.register_node); return the token."""
    while not any(b.target == "Hdd" for b in emu.boots[after:]):
        await asyncio.sleep(0.2)
    user_data = yaml.safe_load(read_user_data(emu.disk_path))
    join = yaml.safe_load(user_data["write_files"][0]["content"])
    token = join["discovery"]["bootstrapToken"]["token"]
    args = {a["name"]: a["value"] for a in join["nodeRegistration"]["kubeletExtraArgs"]}
    await asyncio.to_thread(
        cluster.control_plane.register_node,
        token,
        join["nodeRegistration"]["name"],
        args["provider-id"],
        join["nodeRegistration"].get("taints"),  # kubeadm registers them (metal3's spec.taints)
    )
    return str(token)


async def test_provisioned_host_joins_the_cluster_and_the_token_stays_out_of_history(
    client: Client,
    settings: Settings,
    target_cluster: tuple[KubeCluster, Path, bytes],
    tmp_path: Path,
    ns: str,
) -> None:
    cluster, kubeconfig, _ = target_cluster
    secret = tmp_path / "target.yaml"
    write_secret(secret, {"kubeconfig": kubeconfig.read_text()})
    join = JoinSpec(kubeconfig=SecretRef(name="target", path=str(secret)), node_labels={"role": "worker"})
    async with Datacenter(settings, hosts=1, prefix="join", namespace=ns) as dc:
        host = dc.host(0, join=join, taints=[Taint(key="dedicated", value="storage", effect="NoSchedule")])
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                helper = asyncio.create_task(kubelet(dc.emulated[0], cluster))
                await operations.apply(client, host, settings)
                token = await asyncio.wait_for(helper, 240)
                joined = await wait_state(client, host, S.PROVISIONED)
                c = config.new_client_from_config(str(kubeconfig))
                core = k8s.CoreV1Api(c)
                node = await asyncio.to_thread(core.read_node, "join-0")
                assert node.metadata.labels == {"role": "worker", "metalflow.io/host": f"{ns}.join-0"}
                assert node.spec.provider_id == f"metalflow://{ns}/join-0"
                # The node lifecycle controller lifts its own node.kubernetes.io/not-ready taint a
                # few seconds after the Node turns Ready; only the host's taints are metalflow's.
                taints = [(t.key, t.value, t.effect) for t in node.spec.taints]
                ours = [t for t in taints if not t[0].startswith("node.kubernetes.io/")]
                assert ours == [("dedicated", "storage", "NoSchedule")]
                tokens = await asyncio.to_thread(
                    core.list_namespaced_secret,
                    "kube-system",
                    label_selector=f"metalflow.io/host={ns}.join-0",
                )
                assert tokens.items == [], "the bootstrap token is deleted once the Node is Ready"
                assert joined.node == JoinedNode(
                    name="join-0", provider_id=f"metalflow://{ns}/join-0", kubeconfig=join.kubeconfig
                )
                # Deprovisioning drains the Node (its pod evicted; the kubelet stand-in confirms
                # the pod stopped, as a kubelet does) and deletes it before the disk is cleaned.
                admin = k8s.CoreV1Api(cluster.admin_client())  # pods: the test's, not metalflow's
                pod = await asyncio.to_thread(bound_pod, admin, "join-0")
                confirm = asyncio.create_task(asyncio.to_thread(confirm_deletions, admin, "join-0", 120))
                boots = len(dc.emulated[0].boots)
                # `metalflow deprovision`: image and join cleared
                await operations.deprovision(client, host.ref)
                st = await wait_state(client, host, S.AVAILABLE)
                assert st.node is None
                assert await confirm == [pod], "the pod was not evicted"
                with pytest.raises(ApiException) as gone:
                    await asyncio.to_thread(core.read_node, "join-0")
                assert gone.value.status == 404
                assert len(dc.emulated[0].boots) > boots, "deprovisioning cleaned the disk after the drain"
                c.close()
                admin.api_client.close()
    secrets = [token, token.split(".")[1], kubeconfig_token(kubeconfig), dc.password]
    await assert_no_secret_in_histories(client, secrets, host.ref.workflow_id, at_least=6)
    assert_no_secret_in(st, secrets, "the host's status")
    await record(client, host.ref.workflow_id, "join-leave")


async def wait_state(client: Client, host: Host, state: S, timeout: float = 180) -> HostStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while (st := await operations.status(client, host.ref)).provisioning.state != state:
        assert st.error_type is None, st.error_message
        assert asyncio.get_running_loop().time() < deadline, f"not {state.value} in {timeout:.0f}s: {st}"
        await asyncio.sleep(0.3)
    return st


def bound_pod(core: k8s.CoreV1Api, node: str) -> str:
    """A pod already bound to NODE (no scheduler here), in the default namespace."""
    name = f"app-{node}"
    spec = k8s.V1PodSpec(
        node_name=node, containers=[k8s.V1Container(name="app", image="example.invalid/app")]
    )
    core.create_namespaced_pod("default", k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=name), spec=spec))
    return f"default/{name}"


def confirm_deletions(core: k8s.CoreV1Api, node: str, timeout: float) -> list[str]:
    """The kubelet's part of a pod deletion, without a kubelet: once a pod on NODE is marked for
    deletion (an eviction), remove it for good. Returns the pods it saw go, when NODE is gone."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items:
            key = f"{pod.metadata.namespace}/{pod.metadata.name}"
            if pod.metadata.deletion_timestamp is not None and key not in seen:
                core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
                seen.append(key)
        try:
            core.read_node(node)
        except ApiException as exc:
            if exc.status == 404:
                return seen
            raise
        time.sleep(0.2)
    raise TimeoutError(f"Node {node} still there after {timeout:.0f}s (pods confirmed gone: {seen})")


async def test_a_token_expired_before_the_host_joined_fails_the_step_and_the_retry_joins(
    client: Client,
    settings: Settings,
    target_cluster: tuple[KubeCluster, Path, bytes],
    tmp_path: Path,
    ns: str,
) -> None:
    """The bootstrap token in the host's user-data runs out before its kubelet used it (a slow
    deploy, a host left off: here its expiration is moved into the past once DeployHost made
    it). The join step fails at once with the fix; the operator's retry deploys again with a new
    token, and the kubelet joins with that one."""
    cluster, kubeconfig, _ = target_cluster
    secret = tmp_path / "target.yaml"
    write_secret(secret, {"kubeconfig": kubeconfig.read_text()})
    join = JoinSpec(kubeconfig=SecretRef(name="target", path=str(secret)), timeout_seconds=600)
    admin = k8s.CoreV1Api(cluster.admin_client())
    async with Datacenter(settings, hosts=1, prefix="late", namespace=ns) as dc:
        host = dc.host(0, join=join)
        label = f"metalflow.io/host={host.ref.host_id}"

        def expire_the_token() -> str:
            while not (tokens := admin.list_namespaced_secret("kube-system", label_selector=label).items):
                time.sleep(0.2)
            past = base64.b64encode(b"2020-01-01T00:00:00Z").decode()
            admin.patch_namespaced_secret(
                tokens[0].metadata.name, "kube-system", {"data": {"expiration": past}}
            )
            return str(tokens[0].metadata.name)

        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                expired = asyncio.create_task(asyncio.to_thread(expire_the_token))
                await operations.apply(client, host, settings)
                stale = await asyncio.wait_for(expired, 120)
                deadline = asyncio.get_running_loop().time() + 180
                while (st := await operations.status(client, host.ref)).error_type is None:
                    assert asyncio.get_running_loop().time() < deadline, "no error reported in time"
                    await asyncio.sleep(0.3)
                assert st.error_type == ErrorType.PROVISIONING, st
                assert "JoinTokenExpired" in st.error_message, st.error_message
                assert "token expired; a new one is issued on retry" in st.error_message
                assert stale.removeprefix("bootstrap-token-") in st.error_message
                helper = asyncio.create_task(
                    kubelet(dc.emulated[0], cluster, after=len(dc.emulated[0].boots))
                )
                await backing_off(client, host.ref.workflow_id)  # a retry sent before would be dropped
                await operations.signal(client, host.ref, "retry")
                token = await asyncio.wait_for(helper, 240)
                assert not token.startswith(stale.removeprefix("bootstrap-token-") + "."), (
                    "the old token again"
                )
                deadline = asyncio.get_running_loop().time() + 180  # the error stays until the step succeeds
                while (st := await operations.status(client, host.ref)).provisioning.state != S.PROVISIONED:
                    assert asyncio.get_running_loop().time() < deadline, (
                        f"not provisioned after the retry: {st}"
                    )
                    await asyncio.sleep(0.3)
                assert st.error_type is None and st.node is not None and st.node.name == "late-0", st
    admin.api_client.close()


async def first_error(client: Client, settings: Settings, host: Host) -> HostStatus:
    """Apply `host` with a worker of its own; its status once it reports an error."""
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(client, settings, executor):
            await operations.apply(client, host, settings)
            deadline = asyncio.get_running_loop().time() + 180
            while (st := await operations.status(client, host.ref)).error_type is None:
                assert asyncio.get_running_loop().time() < deadline, "no error reported in time"
                await asyncio.sleep(0.3)
    return st


async def test_missing_cluster_info_fails_with_the_fix(
    client: Client,
    settings: Settings,
    tmp_path: Path,
    ns: str,
    target_cluster: tuple[KubeCluster, Path, bytes],
) -> None:
    """A cluster where `kubeadm init phase bootstrap-token` has not run: cluster-info is taken
    away for this test, then put back by running that very command."""
    cluster, kubeconfig, _ = target_cluster
    with cluster.admin_client() as api:
        await asyncio.to_thread(
            k8s.CoreV1Api(api).delete_namespaced_config_map, "cluster-info", "kube-public"
        )
    try:
        secret = tmp_path / "target.yaml"
        write_secret(secret, {"kubeconfig": kubeconfig.read_text()})
        join = JoinSpec(kubeconfig=SecretRef(name="target", path=str(secret)))
        async with Datacenter(settings, hosts=1, prefix="nojoin", namespace=ns) as dc:
            host = dc.host(0, join=join)
            st = await first_error(client, settings, host)
        secrets = [kubeconfig_token(kubeconfig), dc.password]
    finally:
        cp = cluster.control_plane
        await asyncio.to_thread(
            cp.kubeadm,
            "init",
            "phase",
            "bootstrap-token",
            f"--config={cp.config}",
            f"--kubeconfig={cp.admin_kubeconfig}",
        )
    assert st.error_type == ErrorType.PROVISIONING
    assert (
        "ClusterInfoMissing" in st.error_message and "kubeadm init phase bootstrap-token" in st.error_message
    )
    await assert_no_secret_in_histories(client, secrets, host.ref.workflow_id, at_least=5)
    assert_no_secret_in(st, secrets, "the host's status")


async def test_malformed_user_data_is_a_typed_error_and_no_line_of_it_reaches_history(
    client: Client,
    settings: Settings,
    target_cluster: tuple[KubeCluster, Path, bytes],
    tmp_path: Path,
    ns: str,
) -> None:
    """PyYAML's error quotes the offending lines; the host's error names Secret, key and line."""
    kubeconfig = tmp_path / "target.yaml"
    write_secret(kubeconfig, {"kubeconfig": target_cluster[1].read_text()})
    user_data, text = tmp_path / "user-data.yaml", malformed_yaml()
    write_secret(user_data, {"userData": text})
    async with Datacenter(settings, hosts=1, prefix="badud", namespace=ns) as dc:
        host = dc.host(
            0,
            join=JoinSpec(kubeconfig=SecretRef(name="target", path=str(kubeconfig))),
            user_data=SecretRef(name="user-data", path=str(user_data)),
        )
        st = await first_error(client, settings, host)
    assert st.error_type == ErrorType.PROVISIONING
    assert st.error_message.endswith("(SecretMalformedYAML)"), st.error_message
    assert f"key 'userData' of file {user_data}" in st.error_message and "line 7" in st.error_message
    await assert_no_secret_in_histories(client, [text], host.ref.workflow_id, at_least=5)
    assert_no_secret_in(st, [text], "the host's status")
