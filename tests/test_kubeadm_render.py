"""kubeadm join pieces that need no cluster: the CA hash (checked against openssl) and user-data."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from temporalio.exceptions import ApplicationError
from tests_support import make_ca

from activities.kubeadm import ca_cert_hash, render_user_data
from metalflow.api.models import HostRef, JoinSpec, SecretRef, Taint


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")
def test_ca_hash_matches_the_openssl_recipe_from_the_kubeadm_docs(tmp_path: Path) -> None:
    pem = make_ca()
    (tmp_path / "ca.crt").write_bytes(pem)
    # openssl x509 -pubkey -in ca.crt | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex
    pub = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(tmp_path / "ca.crt")],
        check=True,
        capture_output=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, check=True, capture_output=True
    ).stdout
    digest = (
        subprocess.run(["openssl", "dgst", "-sha256", "-hex"], input=der, check=True, capture_output=True)
        .stdout.decode()
        .split()[-1]
    )
    assert ca_cert_hash(pem) == f"sha256:{digest}"


JOIN = JoinSpec(kubeconfig=SecretRef(name="target-kubeconfig"), node_labels={"role": "worker"})
REF = HostRef(namespace="metal3", name="worker-0")


def test_user_data_runs_kubeadm_join_after_the_users_own_commands() -> None:
    own = "#cloud-config\nruncmd:\n  - [echo, hello]\nssh_authorized_keys: [ssh-ed25519 AAAA]\n"
    url = "http://192.0.2.1:8088/join-report/metal3.worker-0"
    out = render_user_data(
        REF, JOIN, "https://10.0.0.1:6443", "abcdef.0123456789abcdef", "sha256:ff", own,
        report_url=url, report_token="r3p0rt",
    )  # fmt: skip
    assert out.startswith("#cloud-config\n")
    doc = yaml.safe_load(out)
    assert doc["runcmd"] == [["echo", "hello"], ["/usr/local/sbin/metalflow-kubeadm-join"]]
    files = {f["path"]: f for f in doc["write_files"]}
    # kubeadm join runs through metalflow's script, which reports a failure to the boot server
    script = files["/usr/local/sbin/metalflow-kubeadm-join"]
    assert script["permissions"] == "0755" and script["content"].startswith("#!/usr/bin/env python3\n")
    assert '["kubeadm", "join", "--config", CONFIG]' in script["content"]
    compile(script["content"], "metalflow-kubeadm-join", "exec")  # valid Python
    where = files["/etc/metalflow/join-report.json"]
    assert where["permissions"] == "0600" and json.loads(where["content"]) == {"url": url, "token": "r3p0rt"}
    assert doc["ssh_authorized_keys"] == ["ssh-ed25519 AAAA"]
    join_cfg = yaml.safe_load(doc["write_files"][0]["content"])
    assert join_cfg["discovery"]["bootstrapToken"] == {
        "apiServerEndpoint": "10.0.0.1:6443",
        "token": "abcdef.0123456789abcdef",
        "caCertHashes": ["sha256:ff"],
    }
    args = {a["name"]: a["value"] for a in join_cfg["nodeRegistration"]["kubeletExtraArgs"]}
    assert args == {"provider-id": "metalflow://metal3/worker-0", "node-labels": "role=worker"}
    assert "controlPlane" not in join_cfg


def test_control_plane_join_needs_a_certificate_key() -> None:
    cp = JOIN.model_copy(update={"control_plane": True})
    with pytest.raises(ApplicationError, match="certificateKey"):
        render_user_data(REF, cp, "https://10.0.0.1:6443", "t", "sha256:ff", None)
    out = render_user_data(REF, cp, "https://10.0.0.1:6443", "t", "sha256:ff", None, "c0ffee")
    assert yaml.safe_load(yaml.safe_load(out)["write_files"][0]["content"])["controlPlane"] == {
        "certificateKey": "c0ffee"
    }


def test_non_cloud_config_user_data_is_rejected_with_the_fix() -> None:
    with pytest.raises(ApplicationError, match="must be #cloud-config") as err:
        render_user_data(REF, JOIN, "https://h:6443", "t", "sha256:ff", "#!/bin/sh\necho hi\n")
    assert err.value.non_retryable


def test_metal3_taints_are_registered_with_the_node() -> None:
    """spec.taints (metal3) go into kubeadm's nodeRegistration.taints: the Node is created with them."""
    taints = [
        Taint(key="dedicated", value="storage", effect="NoSchedule"),
        Taint(key="example.com/drain", effect="NoExecute"),
    ]
    out = render_user_data(REF, JOIN, "https://10.0.0.1:6443", "t", "sha256:ff", None, taints=taints)
    join_cfg = yaml.safe_load(yaml.safe_load(out)["write_files"][0]["content"])
    assert join_cfg["nodeRegistration"]["taints"] == [
        {"key": "dedicated", "value": "storage", "effect": "NoSchedule"},
        {"key": "example.com/drain", "effect": "NoExecute"},
    ]
    plain = render_user_data(REF, JOIN, "https://10.0.0.1:6443", "t", "sha256:ff", None)
    assert (
        "taints" not in yaml.safe_load(yaml.safe_load(plain)["write_files"][0]["content"])["nodeRegistration"]
    )
