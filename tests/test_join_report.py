"""A failed `kubeadm join` on the host reaches the join step with kubeadm's reason.

The boot server's report endpoint (worker/join_reports.py) on loopback; and the whole path with
the real kubeadm: metalflow's join activity renders the user-data, the join script from it
runs on a private node (testbed/kube.py: a mount namespace) against the real control plane,
kubeadm refuses a CA hash that does not pin the cluster's CA, the script reports it, and the
join step's wait fails with kubeadm's words. kubeadm runs with `--dry-run` there (a wrapper on
PATH adds it): this machine has no container runtime for a real join (the VM e2e has one).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from fixtures.kubeapi import KubeCluster, wait_until
from kubernetes import client as k8s
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.join_reports import JoinReportStore, reason
from activities.kubeadm import prepare_join, wait_node
from metalflow.api.join import JoinRequest, WaitNodeRequest
from metalflow.api.models import HostRef, JoinSpec, SecretRef
from testbed.datacenter import write_secret
from testbed.kube import on_private_node
from testbed.processes import free_port
from worker.boot_server import start_boot_server

SCRIPT = "/usr/local/sbin/metalflow-kubeadm-join"


@pytest_asyncio.fixture
async def boot_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, Path]]:
    """The boot server on loopback, and the Settings of the worker's activities pointing at it."""
    boot_dir, port = tmp_path / "boot", free_port()
    runner = await start_boot_server("127.0.0.1", port, boot_dir)
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(boot_dir))
    monkeypatch.setenv("METALFLOW_BOOT_SERVER_URL", url)
    monkeypatch.setenv("METALFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("METALFLOW_PUBLISH_STATUS_TO_KUBERNETES", raising=False)
    try:
        yield url, boot_dir
    finally:
        await runner.cleanup()


def post(url: str, body: bytes, token: str | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, body, headers, method="POST"), timeout=10
        ) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def test_the_report_endpoint_keeps_only_the_current_joins_report(boot_server: tuple[str, Path]) -> None:
    url, boot_dir = boot_server
    host = "rack-1.worker-0"
    store = JoinReportStore(boot_dir)
    report = json.dumps({"exitCode": 1, "output": "error: token abcdef.0123456789abcdef refused\x1b[31m"})
    endpoint = f"{url}/join-report/{host}"
    code, text = await asyncio.to_thread(post, endpoint, report.encode(), None)
    assert code == 401 and "Authorization: Bearer" in text
    code, text = await asyncio.to_thread(post, endpoint, report.encode(), "guess")
    assert code == 401 and "no join of rack-1.worker-0 is waiting" in text
    old = store.expect(host)
    token = store.expect(host)  # a new join: the old token is void
    code, text = await asyncio.to_thread(post, endpoint, report.encode(), old)
    assert code == 401 and "not the report token" in text
    code, text = await asyncio.to_thread(post, endpoint, b'{"exitCode": "x"}', token)
    assert code == 400 and "not a join report" in text
    code, _ = await asyncio.to_thread(
        post, endpoint, json.dumps({"exitCode": 1, "output": "x" * 70000}).encode(), token
    )
    assert code == 413
    assert store.read(host) is None
    code, _ = await asyncio.to_thread(post, endpoint, report.encode(), token)
    assert code == 204
    kept = store.read(host)
    assert kept is not None and kept.exit_code == 1
    # a bootstrap token never stays, nor terminal escapes
    assert kept.output == "error: token <bootstrap token> refused?[31m"
    assert "abcdef" not in (boot_dir / "join-reports" / host / "report.json").read_text()
    assert token not in "".join(p.read_text() for p in (boot_dir / "join-reports" / host).iterdir())
    store.expect(host)  # the next join starts with no report
    assert store.read(host) is None


def test_reason_is_kubeadms_error_line_or_its_last_words() -> None:
    out = "[preflight] Running pre-flight checks\nerror execution phase preflight: couldn't validate\n"
    assert reason(out) == "error execution phase preflight: couldn't validate"
    preflight = (
        "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: exists\n[ERROR Port-10250]: in use\nhint\n"
    )
    assert (
        reason(preflight)
        == "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: exists; [ERROR Port-10250]: in use"
    )
    assert reason("a\nb\nc\nd\n") == "b; c; d"


def user_data_files(plan_path: str) -> dict[str, Any]:
    user_data = yaml.safe_load(yaml.safe_load(Path(plan_path).read_text())["userData"])
    return {f["path"]: f["content"] for f in user_data["write_files"]}


async def test_kubeadms_refusal_on_the_host_is_the_join_steps_error(
    kube_cluster: KubeCluster, boot_server: tuple[str, Path], tmp_path: Path
) -> None:
    host = HostRef(namespace="rack-1", name=f"pinned-{uuid.uuid4().hex[:6]}")
    secret = tmp_path / "target.yaml"
    write_secret(secret, {"kubeconfig": kube_cluster.join_kubeconfig.read_text()})
    join = JoinSpec(kubeconfig=SecretRef(name="target", path=str(secret)), timeout_seconds=120)
    env = ActivityEnvironment()
    plan = await asyncio.to_thread(env.run, prepare_join, JoinRequest(host=host, join=join))
    assert plan.user_data.path
    files = user_data_files(plan.user_data.path)
    cfg = yaml.safe_load(files["/etc/kubernetes/kubeadm-join.yaml"])
    token_id = cfg["discovery"]["bootstrapToken"]["token"].split(".")[0]
    with kube_cluster.admin_client() as admin:  # a real join waits for it; kubeadm's dry run does not
        core = k8s.CoreV1Api(admin)
        await asyncio.to_thread(
            wait_until,
            lambda: (
                f"jws-kubeconfig-{token_id}"
                in core.read_namespaced_config_map("cluster-info", "kube-public").data
            ),
            60,
            "the controller manager's bootstrapsigner to sign cluster-info for the token",
        )
    # the cluster's CA is not the one pinned (a CA rotated since, a spoofed endpoint): as if
    cfg["discovery"]["bootstrapToken"]["caCertHashes"] = ["sha256:" + "0" * 64]
    cfg["timeouts"] = {"discovery": "20s"}
    stage = tmp_path / "stage"
    (stage / "bin").mkdir(parents=True)
    (stage / "kubeadm-join.yaml").write_text(yaml.safe_dump(cfg))
    (stage / "join-report.json").write_text(files["/etc/metalflow/join-report.json"])
    (stage / "join").write_text(files[SCRIPT])
    kubeadm = kube_cluster.control_plane.bin / "kubeadm"
    (stage / "bin" / "kubeadm").write_text(
        f'#!/bin/sh\nexec {kubeadm} "$@" --dry-run --ignore-preflight-errors=all\n'
    )
    (stage / "bin" / "kubeadm").chmod(0o755)
    install = (
        f"mkdir -p /etc/metalflow && cp {stage}/kubeadm-join.yaml /etc/kubernetes/ && "
        f"cp {stage}/join-report.json /etc/metalflow/ && exec python3 {stage}/join"
    )
    path = f"{stage / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin"
    done = await asyncio.to_thread(
        on_private_node, ["sh", "-c", install], tmp_path / "scratch", {"PATH": path}
    )
    assert done.returncode != 0, done.stdout
    assert "metalflow: kubeadm's failure reported to" in done.stdout, done.stdout[-3000:]
    wait = WaitNodeRequest(host=host, join=join, token_secret=plan.token_secret)
    with pytest.raises(ApplicationError) as err:
        await asyncio.to_thread(env.run, wait_node, wait)
    assert err.value.type == "KubeadmJoinFailed" and err.value.non_retryable, err.value
    message = err.value.message
    assert message.startswith(f"kubeadm join failed on rack-1/{host.name} (exit 1): "), message
    assert "error execution phase preflight: couldn't validate the identity of the API Server" in message
    assert "none of the public keys" in message and "are pinned" in message, message
    token = yaml.safe_load(files["/etc/kubernetes/kubeadm-join.yaml"])["discovery"]["bootstrapToken"]["token"]
    assert token.split(".")[1] not in message
