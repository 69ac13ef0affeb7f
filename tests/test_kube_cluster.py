"""The real control plane of the test bed (tests/fixtures/kubeapi.py): kubeadm-shaped, both kinds
of authentication, metalflow's CRDs enforced by the API server, and the bridge's ServiceAccount
held to k8s_bridge/manifests/rbac.yaml."""

from __future__ import annotations

import base64
import copy
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml
from fixtures.kubeapi import KubeCluster
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from k8s_bridge.main import CONTROLLERS, WORKERS, bridge_api_client
from metalflow.runtime.settings import Settings

G, V, P = "metal3.io", "v1alpha1", "baremetalhosts"


def bmh(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "BareMetalHost",
        "metadata": {"name": name},
        "spec": {
            "online": True,
            "bootMACAddress": "52:54:00:00:00:01",
            "bmc": {"address": "ipmi://127.0.0.1:6230", "credentialsName": "bmc"},
        },
    }


def whoami(api: k8s.ApiClient) -> tuple[str, list[str]]:
    review = k8s.AuthenticationV1Api(api).create_self_subject_review(
        k8s.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
    )
    info = review.status.user_info
    return info.username, list(info.groups or [])


def test_control_plane_is_kubeadm_shaped(kube_cluster: KubeCluster) -> None:
    """cluster-info, kubeadm-config and kubelet-config as `kubeadm init phase ...` writes them."""
    cp = kube_cluster.control_plane
    with kube_cluster.admin_client() as api:
        core = k8s.CoreV1Api(api)
        info = yaml.safe_load(
            core.read_namespaced_config_map("cluster-info", "kube-public").data["kubeconfig"]
        )
        cluster = info["clusters"][0]["cluster"]
        assert cluster["server"] == cp.url
        assert base64.b64decode(cluster["certificate-authority-data"]) == cp.ca_pem
        kubeadm_config = core.read_namespaced_config_map("kubeadm-config", "kube-system").data
        assert yaml.safe_load(kubeadm_config["ClusterConfiguration"])["kubernetesVersion"] == cp.version
        assert (
            "KubeletConfiguration"
            in core.read_namespaced_config_map("kubelet-config", "kube-system").data["kubelet"]
        )
        bindings = {
            b.metadata.name for b in k8s.RbacAuthorizationV1Api(api).list_cluster_role_binding().items
        }
        assert {"kubeadm:kubelet-bootstrap", "kubeadm:node-autoapprove-bootstrap"} <= bindings


def test_client_certificate_and_token_authentication(kube_cluster: KubeCluster) -> None:
    with kube_cluster.admin_client() as admin, kube_cluster.bridge_client() as bridge:
        user, groups = whoami(admin)
        assert "system:masters" in groups, (user, groups)  # kubeadm's super-admin client certificate
        assert whoami(bridge) == (
            "system:serviceaccount:metalflow-system:metalflow",
            ["system:serviceaccounts", "system:serviceaccounts:metalflow-system", "system:authenticated"],
        )


def test_crd_schema_is_enforced_and_unknown_fields_pruned(kube_api: k8s.ApiClient, ns: str) -> None:
    co = k8s.CustomObjectsApi(kube_api)
    body = bmh("pruned")
    body["spec"]["notAField"] = "dropped"
    created = co.create_namespaced_custom_object(G, V, ns, P, body)
    assert "notAField" not in created["spec"] and created["spec"]["online"] is True
    bad = copy.deepcopy(bmh("bad"))
    bad["spec"]["bootMode"] = "BIOS"
    with pytest.raises(ApiException) as err:
        co.create_namespaced_custom_object(G, V, ns, P, bad)
    assert err.value.status == 422 and "spec.bootMode" in err.value.body


def test_bridge_service_account_is_held_to_rbac_yaml(
    kube_api: k8s.ApiClient, bridge_api: k8s.ApiClient, ns: str
) -> None:
    """What rbac.yaml grants works with the ServiceAccount's token; what it leaves out is 403."""
    admin, bridge = k8s.CustomObjectsApi(kube_api), k8s.CustomObjectsApi(bridge_api)
    admin.create_namespaced_custom_object(G, V, ns, P, bmh("h"))
    listed = bridge.list_cluster_custom_object(G, V, P)["items"]  # the bridge lists the whole cluster
    assert [o["metadata"]["name"] for o in listed if o["metadata"]["namespace"] == ns] == ["h"]
    status = {  # the fields metal3's CRD requires of a status
        "operationalStatus": "OK",
        "errorMessage": "",
        "hardwareProfile": "",
        "poweredOn": False,
        "provisioning": {"state": "registering"},
    }
    patched = bridge.patch_namespaced_custom_object_status(G, V, ns, P, "h", {"status": status})
    assert patched["status"]["operationalStatus"] == "OK"
    bridge.patch_namespaced_custom_object(G, V, ns, P, "h", {"metadata": {"finalizers": ["x.io/y"]}})
    core = k8s.CoreV1Api(bridge_api)
    core.create_namespaced_secret(
        ns, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="s"), string_data={"a": "b"})
    )
    for forbidden in (
        lambda: bridge.create_namespaced_custom_object(G, V, ns, P, bmh("new")),
        lambda: bridge.delete_namespaced_custom_object(G, V, ns, P, "h"),
        lambda: core.delete_namespaced_secret("s", ns),
        lambda: core.list_node(),
    ):
        with pytest.raises(ApiException) as err:
            forbidden()
        assert err.value.status == 403, err.value.body


def test_bridge_client_keeps_a_connection_for_each_reconcile_thread(
    kube_cluster: KubeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """`metalflow bridge`'s one client, used by every reconcile thread of its controllers
    at once, keeps a TLS connection for each: none is opened for one request and discarded
    (urllib3's "Connection pool is full"), as with the client's default pool of 5 per CPU."""
    settings = Settings(kubeconfig=kube_cluster.bridge_kubeconfig)
    threads = len(CONTROLLERS) * WORKERS
    start = threading.Barrier(threads)

    def reconcile_like(_: int) -> bool:
        start.wait(timeout=60)  # all requests in flight together, as in a burst of events
        return "items" in co.list_cluster_custom_object(G, V, P)

    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    with bridge_api_client(settings) as api, ThreadPoolExecutor(threads) as pool:
        co = k8s.CustomObjectsApi(api)
        for _ in range(3):
            assert all(pool.map(reconcile_like, range(threads)))
    discarded = [r for r in caplog.records if "Connection pool is full" in r.getMessage()]
    assert not discarded, f"{len(discarded)} connections opened for one request and thrown away"
