"""kubeadm join discovery with the real kubeadm against the real control plane.

metalflow's join activities (activities/kubeadm.py, run in Temporal's activity environment)
create the bootstrap token and render the JoinConfiguration; the real kube-apiserver
authenticates the token, the real controller manager signs cluster-info for it (bootstrapsigner)
and removes expired tokens (tokencleaner), and the real `kubeadm join --dry-run`, in a private
mount namespace (testbed/kube.py), passes discovery with it, or fails with a wrong CA hash or an
expired token.

The Node the join step waits for is created through the bootstrap credentials' CSR flow (a CSR
the controller manager approves and signs, then the Node registered with that certificate):
what a kubelet does, without a kubelet or container runtime on this machine.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.kubeapi import KubeCluster, wait_until
from kubernetes import client as k8s
from kubernetes import config
from kubernetes.client.exceptions import ApiException
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import kubeadm
from activities.kubeadm import ca_cert_hash, cleanup_token, prepare_join, wait_node
from metalflow.api.join import JoinPlan, JoinRequest, WaitNodeRequest
from metalflow.api.models import HostRef, JoinSpec, SecretRef
from testbed.datacenter import write_secret
from testbed.kube import kubeadm_join_dry_run

BOOTSTRAPPERS = "system:bootstrappers:kubeadm:default-node-token"
DISCOVERED = (
    "Cluster info signature and contents are valid and TLS certificate validates against pinned roots"
)


def join_config(plan: JoinPlan) -> dict[str, Any]:
    """The JoinConfiguration inside the user-data metalflow rendered (a 0600 file here)."""
    assert plan.user_data.path is not None
    user_data = yaml.safe_load(Path(plan.user_data.path).read_text())["userData"]
    cloud_config = yaml.safe_load(user_data)
    files = {f["path"]: f["content"] for f in cloud_config["write_files"]}
    return dict(yaml.safe_load(files["/etc/kubernetes/kubeadm-join.yaml"]))


def dry_run(
    cluster: KubeCluster, cfg: dict[str, Any], tmp: Path, discovery_timeout: str = "20s"
) -> tuple[int, str]:
    cfg = {**cfg, "timeouts": {"discovery": discovery_timeout}}
    path = tmp / f"join-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    done = kubeadm_join_dry_run(cluster.control_plane.bin / "kubeadm", path, tmp / "scratch")
    return done.returncode, done.stdout


def token_client(cluster: KubeCluster, token: str, tmp: Path) -> k8s.ApiClient:
    kc = cluster.control_plane.token_kubeconfig(tmp / "bootstrap.kubeconfig", token, user="bootstrap")
    return config.new_client_from_config(str(kc))


def join_spec(cluster: KubeCluster, tmp: Path) -> JoinSpec:
    secret = tmp / "target.yaml"
    write_secret(secret, {"kubeconfig": cluster.join_kubeconfig.read_text()})
    return JoinSpec(
        kubeconfig=SecretRef(name="target", path=str(secret)),
        node_labels={"role": "worker"},
        timeout_seconds=60,
    )


async def test_metalflow_token_passes_kubeadm_discovery_and_the_node_joins(
    kube_cluster: KubeCluster, tmp_path: Path, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("METALFLOW_PUBLISH_STATUS_TO_KUBERNETES", raising=False)
    host = HostRef(namespace=ns, name=f"node-{uuid.uuid4().hex[:6]}")
    join = join_spec(kube_cluster, tmp_path)
    env = ActivityEnvironment()
    plan = await asyncio.to_thread(env.run, prepare_join, JoinRequest(host=host, join=join))
    cfg = join_config(plan)
    token = cfg["discovery"]["bootstrapToken"]["token"]
    token_id = token.split(".")[0]
    cp = kube_cluster.control_plane
    assert plan.ca_cert_hash == ca_cert_hash(cp.ca_pem)
    assert cfg["discovery"]["bootstrapToken"]["apiServerEndpoint"] == f"127.0.0.1:{cp.port}"

    with token_client(kube_cluster, token, tmp_path) as api:
        review = k8s.AuthenticationV1Api(api).create_self_subject_review(k8s.V1SelfSubjectReview())
    assert review.status.user_info.username == f"system:bootstrap:{token_id}"
    assert BOOTSTRAPPERS in review.status.user_info.groups

    with kube_cluster.admin_client() as admin:
        core = k8s.CoreV1Api(admin)
        wait_until(
            lambda: (
                f"jws-kubeconfig-{token_id}"
                in core.read_namespaced_config_map("cluster-info", "kube-public").data
            ),
            60,
            "the controller manager's bootstrapsigner to sign cluster-info for metalflow's token",
        )

    code, out = dry_run(kube_cluster, cfg, tmp_path)
    assert DISCOVERED in out, out[-4000:]
    assert f'will use API Server "127.0.0.1:{cp.port}"' in out, out[-4000:]
    assert code == 0, out[-4000:]

    wrong = {**cfg, "discovery": {"bootstrapToken": {**cfg["discovery"]["bootstrapToken"]}}}
    wrong["discovery"]["bootstrapToken"]["caCertHashes"] = ["sha256:" + "0" * 64]
    code, out = dry_run(kube_cluster, wrong, tmp_path, "10s")
    assert code != 0 and DISCOVERED not in out
    assert "none of the public keys" in out and "are pinned" in out, out[-4000:]

    # The join step's wait: a Node registered through the bootstrap credentials' CSR flow.
    kube_cluster.control_plane.register_node(token, host.name)
    wait = WaitNodeRequest(host=host, join=join, token_secret=plan.token_secret)
    node = await asyncio.to_thread(env.run, wait_node, wait)
    assert node.ready and node.name == host.name and node.provider_id == f"metalflow://{ns}/{host.name}"
    await asyncio.to_thread(env.run, cleanup_token, wait)
    with kube_cluster.admin_client() as admin:
        core = k8s.CoreV1Api(admin)
        got = core.read_node(host.name)
        assert got.metadata.labels["role"] == "worker"
        assert got.metadata.labels["metalflow.io/host"] == host.host_id
        with pytest.raises(ApiException) as err:
            core.read_namespaced_secret(f"bootstrap-token-{token_id}", "kube-system")
        assert err.value.status == 404
        core.delete_node(host.name)


async def test_expired_token_is_removed_by_the_token_cleaner_and_fails_discovery(
    kube_cluster: KubeCluster, tmp_path: Path, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token metalflow makes carries an expiration the real token cleaner honours: once it
    passes (TOKEN_TTL shortened to seconds here), the cleaner deletes the token's Secret, and
    kubeadm's discovery with metalflow's JoinConfiguration fails."""
    monkeypatch.setenv("METALFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("METALFLOW_PUBLISH_STATUS_TO_KUBERNETES", raising=False)
    monkeypatch.setattr(kubeadm, "TOKEN_TTL", timedelta(seconds=5))
    host = HostRef(namespace=ns, name=f"expiring-{uuid.uuid4().hex[:6]}")
    plan = await asyncio.to_thread(
        ActivityEnvironment().run,
        prepare_join,
        JoinRequest(host=host, join=join_spec(kube_cluster, tmp_path)),
    )
    cfg = join_config(plan)
    token_id = cfg["discovery"]["bootstrapToken"]["token"].split(".")[0]
    name = f"bootstrap-token-{token_id}"
    with kube_cluster.admin_client() as admin:
        core = k8s.CoreV1Api(admin)
        data = core.read_namespaced_secret(name, "kube-system").data  # there until it expires
        expires = datetime.fromisoformat(base64.b64decode(data["expiration"]).decode().replace("Z", "+00:00"))
        assert timedelta(0) < expires - datetime.now(UTC) <= timedelta(seconds=5)

        def gone() -> bool:
            try:
                core.read_namespaced_secret(name, "kube-system")
            except ApiException as exc:
                return exc.status == 404
            return False

        wait_until(gone, 90, "the controller manager's tokencleaner to delete the expired token")
    # Deleted for having expired (RFC 3339 timestamps have whole seconds), not at once.
    assert datetime.now(UTC) >= expires - timedelta(seconds=1)
    code, out = dry_run(kube_cluster, cfg, tmp_path, "10s")
    assert code != 0 and DISCOVERED not in out, out[-4000:]


async def test_a_token_that_expires_before_the_kubelet_uses_it_fails_the_wait_and_a_retry_issues_another(
    kube_cluster: KubeCluster, tmp_path: Path, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host never joined (a deploy that took longer than the token's life, a host left off):
    the wait fails at once with the fix instead of running into its timeout, and the step's
    retry (prepare_join again) issues a new token the kubelet joins with."""
    monkeypatch.setenv("METALFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("METALFLOW_PUBLISH_STATUS_TO_KUBERNETES", raising=False)
    monkeypatch.setattr(kubeadm, "TOKEN_TTL", timedelta(seconds=3))
    host = HostRef(namespace=ns, name=f"late-{uuid.uuid4().hex[:6]}")
    join = join_spec(kube_cluster, tmp_path).model_copy(update={"timeout_seconds": 60})
    env = ActivityEnvironment()
    plan = await asyncio.to_thread(env.run, prepare_join, JoinRequest(host=host, join=join))
    stale = join_config(plan)["discovery"]["bootstrapToken"]["token"]
    wait = WaitNodeRequest(host=host, join=join, token_secret=plan.token_secret)
    with pytest.raises(ApplicationError) as err:
        await asyncio.to_thread(env.run, wait_node, wait)
    assert err.value.type == "JoinTokenExpired" and err.value.non_retryable
    assert "token expired; a new one is issued on retry" in err.value.message
    assert stale.split(".")[0] in err.value.message and stale.split(".")[1] not in err.value.message

    monkeypatch.setattr(kubeadm, "TOKEN_TTL", timedelta(hours=24))
    retry = await asyncio.to_thread(env.run, prepare_join, JoinRequest(host=host, join=join))
    assert retry.token_secret.name != plan.token_secret.name
    fresh = join_config(retry)["discovery"]["bootstrapToken"]["token"]
    await asyncio.to_thread(kube_cluster.control_plane.register_node, fresh, host.name)
    wait = WaitNodeRequest(host=host, join=join, token_secret=retry.token_secret)
    try:
        assert (await asyncio.to_thread(env.run, wait_node, wait)).ready
    finally:
        with kube_cluster.admin_client() as admin:
            k8s.CoreV1Api(admin).delete_node(host.name)
