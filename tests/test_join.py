"""kubeadm join end to end: provision with spec.join against a target cluster (the test API
server). A kubelet stand-in reads the user-data from the config drive on the host's disk,
authenticates with the bootstrap token it finds there, and registers the Node."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pycdlib
import pytest_asyncio
import yaml
from history_scan import assert_no_secret_in, assert_no_secret_in_histories
from kubernetes import client as k8s
from kubernetes import config
from temporalio.client import Client
from tests_support import make_ca, malformed_yaml, record

from metalflow.api.models import ErrorType, Host, HostStatus, JoinSpec, SecretRef, Taint
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter, write_secret
from testbed.hosts import EmulatedHost
from testbed.kapi import KubeAPIServer
from worker.control import build_worker


@pytest_asyncio.fixture
async def target_cluster(tmp_path: Path) -> AsyncIterator[tuple[KubeAPIServer, Path, bytes]]:
    async with KubeAPIServer() as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "target-kubeconfig")
        ca = make_ca()
        cluster_info = yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "",
                        "cluster": {
                            "server": "https://192.0.2.10:6443",
                            "certificate-authority-data": base64.b64encode(ca).decode(),
                        },
                    }
                ],
            }
        )
        c = config.new_client_from_config(str(kubeconfig))
        await asyncio.to_thread(
            k8s.CoreV1Api(c).create_namespaced_config_map,
            "kube-public",
            k8s.V1ConfigMap(
                metadata=k8s.V1ObjectMeta(name="cluster-info"), data={"kubeconfig": cluster_info}
            ),
        )
        c.close()
        yield api, kubeconfig, ca


def kubeconfig_token(kubeconfig: Path) -> str:
    """The target cluster's credential in the join kubeconfig Secret."""
    return str(yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"])


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


async def kubelet(emu: EmulatedHost, kubeconfig: Path) -> str:
    """Wait for the host to boot its OS, then join as kubeadm would; return the token used."""
    while not (emu.boots and emu.boots[-1].target == "Hdd"):
        await asyncio.sleep(0.2)
    user_data = yaml.safe_load(read_user_data(emu.disk_path))
    join = yaml.safe_load(user_data["write_files"][0]["content"])
    token = join["discovery"]["bootstrapToken"]["token"]
    token_id, token_secret = token.split(".")
    args = {a["name"]: a["value"] for a in join["nodeRegistration"]["kubeletExtraArgs"]}
    c = config.new_client_from_config(str(kubeconfig))
    core = k8s.CoreV1Api(c)
    secret = await asyncio.to_thread(
        core.read_namespaced_secret, f"bootstrap-token-{token_id}", "kube-system"
    )
    assert secret.type == "bootstrap.kubernetes.io/token"
    assert base64.b64decode(secret.data["token-secret"]).decode() == token_secret, (
        "the API server would refuse"
    )
    node = k8s.V1Node(
        metadata=k8s.V1ObjectMeta(name=join["nodeRegistration"]["name"]),
        spec=k8s.V1NodeSpec(
            provider_id=args["provider-id"],
            # kubeadm registers the Node with nodeRegistration.taints (metal3's spec.taints)
            taints=[k8s.V1Taint(**t) for t in join["nodeRegistration"].get("taints", [])] or None,
        ),
        status=k8s.V1NodeStatus(
            conditions=[k8s.V1NodeCondition(type="Ready", status="True", reason="KubeletReady")]
        ),
    )
    await asyncio.to_thread(core.create_node, node)
    c.close()
    return token


async def test_provisioned_host_joins_the_cluster_and_the_token_stays_out_of_history(
    client: Client,
    settings: Settings,
    target_cluster: tuple[KubeAPIServer, Path, bytes],
    tmp_path: Path,
    ns: str,
) -> None:
    _, kubeconfig, _ = target_cluster
    secret = tmp_path / "target.yaml"
    write_secret(secret, {"kubeconfig": kubeconfig.read_text()})
    join = JoinSpec(kubeconfig=SecretRef(name="target", path=str(secret)), node_labels={"role": "worker"})
    async with Datacenter(settings, hosts=1, prefix="join", namespace=ns) as dc:
        host = dc.host(0, join=join, taints=[Taint(key="dedicated", value="storage", effect="NoSchedule")])
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                helper = asyncio.create_task(kubelet(dc.emulated[0], kubeconfig))
                await operations.apply(client, host, settings)
                token = await asyncio.wait_for(helper, 240)
                deadline = asyncio.get_running_loop().time() + 120
                while (st := await operations.status(client, host.ref)).provisioning.state != S.PROVISIONED:
                    assert st.error_type is None, st.error_message
                    assert asyncio.get_running_loop().time() < deadline, "not provisioned in time"
                    await asyncio.sleep(0.3)
    c = config.new_client_from_config(str(kubeconfig))
    core = k8s.CoreV1Api(c)
    node = await asyncio.to_thread(core.read_node, "join-0")
    assert node.metadata.labels == {"role": "worker", "metalflow.io/host": f"{ns}.join-0"}
    assert node.spec.provider_id == f"metalflow://{ns}/join-0"
    assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [("dedicated", "storage", "NoSchedule")]
    tokens = await asyncio.to_thread(core.list_namespaced_secret, "kube-system")
    assert tokens.items == [], "the bootstrap token is deleted once the Node is Ready"
    c.close()
    secrets = [token, token.split(".")[1], kubeconfig_token(kubeconfig), dc.password]
    await assert_no_secret_in_histories(client, secrets, host.ref.workflow_id, at_least=6)
    assert_no_secret_in(st, secrets, "the host's status")
    await record(client, host.ref.workflow_id, "join")


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
    client: Client, settings: Settings, tmp_path: Path, ns: str
) -> None:
    async with KubeAPIServer() as api:
        secret = tmp_path / "target.yaml"
        write_secret(secret, {"kubeconfig": api.write_kubeconfig(tmp_path / "kc").read_text()})
        join = JoinSpec(kubeconfig=SecretRef(name="target", path=str(secret)))
        async with Datacenter(settings, hosts=1, prefix="nojoin", namespace=ns) as dc:
            host = dc.host(0, join=join)
            st = await first_error(client, settings, host)
        secrets = [kubeconfig_token(tmp_path / "kc"), dc.password]
    assert st.error_type == ErrorType.PROVISIONING
    assert (
        "ClusterInfoMissing" in st.error_message and "kubeadm init phase bootstrap-token" in st.error_message
    )
    await assert_no_secret_in_histories(client, secrets, host.ref.workflow_id, at_least=5)
    assert_no_secret_in(st, secrets, "the host's status")


async def test_malformed_user_data_is_a_typed_error_and_no_line_of_it_reaches_history(
    client: Client,
    settings: Settings,
    target_cluster: tuple[KubeAPIServer, Path, bytes],
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
