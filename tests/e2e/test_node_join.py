"""A machine metalflow provisions joins a real Kubernetes control plane with the real kubeadm and
kubelet, and leaves it when deprovisioned (issue 23). Part of `make e2e` (marker `join`).

The control plane is the test bed's (testbed/kube.py: kube-apiserver, kube-controller-manager,
etcd, set up by the real kubeadm's init phases), its serving certificate also valid for the
bed's namespace address, which kube-public/cluster-info names: the VM reaches it there through
the bed's forwarder (testbed/nsforward.py), metalflow on loopback.

1. A BareMetalHost with `spec.join` (node labels) and `spec.taints` gets the node image
   (testbed/node_image.py: Debian, containerd, the CNI plugins, kubelet and kubeadm at the control
   plane's version) by the Redfish BMC, PXE and the deploy ramdisk. cloud-init runs the `kubeadm
   join` metalflow rendered; the kubelet's TLS bootstrap sends a CSR the controller manager
   approves and signs; the Node registers with the taints and turns Ready; the join step labels
   it, and the host is provisioned with status.node naming it. `kubectl get node` shows it.
   No container image is pulled (no registry is reachable): a Node needs none to be Ready.
2. A pod bound to the Node (it cannot start: its sandbox image is not reachable) is evicted when
   the host is deprovisioned; the real kubelet confirms it gone; the Node is deleted before the
   host is powered off.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity
from temporalio.client import Client
from test_realos_deploy import wait_status

from metalflow.api.models import HostRef
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.client.hostfile import load_hosts
from metalflow.runtime.settings import Settings
from testbed.kube import ControlPlane, install_join_rbac, kubectl, kubernetes_version
from testbed.os_image import OSImage
from testbed.vm import NET_ADDRESS, VMTestBed, ramdisk_boot_budget
from worker.control import build_worker

BUDGET = ramdisk_boot_budget() + 900  # seconds to provisioned: deploy, OS boot and the join
pytestmark = [pytest.mark.e2e, pytest.mark.join, pytest.mark.timeout(BUDGET + 900)]
GIB = 1 << 30
NODE_IP = "192.0.2.21"  # static, from networkData: the bed's dnsmasq answers only hosts it boots
LABELS = {"metalflow.io/pool": "e2e", "topology.kubernetes.io/zone": "rack-1"}
TAINT = {"key": "metalflow.io/dedicated", "value": "batch", "effect": "NoSchedule"}


def network_data(mac: str) -> dict[str, Any]:
    """One NIC, a static address and a default route via the namespace's address (the kubelet
    picks its node IP from the default route's interface)."""
    return {
        "links": [{"id": "nic0", "type": "phy", "ethernet_mac_address": mac, "mtu": 1500}],
        "networks": [
            {
                "id": "node",
                "type": "ipv4",
                "link": "nic0",
                "ip_address": NODE_IP,
                "netmask": "255.255.255.0",
                "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": NET_ADDRESS}],
                "network_id": "node",
            }
        ],
        "services": [],
    }


def host_docs(
    tb: VMTestBed, name: str, mac: str, bmc: str, ns: str, join_kubeconfig: Path
) -> list[dict[str, Any]]:
    secret = {"apiVersion": "v1", "kind": "Secret"}
    return [
        {
            **secret,
            "metadata": {"name": "bmc", "namespace": ns},
            "stringData": {"username": "admin", "password": tb.password},
        },
        # metalflow reaches the cluster on loopback with this kubeconfig; nodes use cluster-info's
        {
            **secret,
            "metadata": {"name": "target", "namespace": ns},
            "stringData": {"kubeconfig": join_kubeconfig.read_text()},
        },
        {
            **secret,
            "metadata": {"name": "network-data", "namespace": ns},
            "stringData": {"networkData": json.dumps(network_data(mac))},
        },
        {
            "apiVersion": "metal3.io/v1alpha1",
            "kind": "BareMetalHost",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "online": True,
                "bootMACAddress": mac,
                "bootMode": "UEFI",
                "bmc": {"address": bmc, "credentialsName": "bmc"},
                "automatedCleaningMode": "disabled",  # cleaning has its own e2e (test_realos_deploy)
                "image": {
                    "url": "set by the caller",
                    "checksum": "",
                    "checksumType": "sha256",
                    "format": "qcow2",
                },
                "networkData": {"name": "network-data", "namespace": ns},
                "taints": [TAINT],
                "join": {
                    "kubeconfig": {"name": "target", "namespace": ns},
                    "nodeLabels": LABELS,
                    "timeoutSeconds": 900,
                },
            },
        },
    ]


def bound_pod(core: k8s.CoreV1Api, node: str) -> str:
    """A pod bound to NODE (no scheduler runs here), tolerating its taint; it never starts."""
    name = f"app-{uuid.uuid4().hex[:6]}"
    spec = k8s.V1PodSpec(
        node_name=node,
        containers=[k8s.V1Container(name="app", image="registry.invalid/app:1")],
        tolerations=[k8s.V1Toleration(key=TAINT["key"], operator="Exists")],
    )
    core.create_namespaced_pod("default", k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=name), spec=spec))
    return name


def activity_order(client: Client, workflow_id: str) -> Any:
    async def order() -> list[str]:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
        ]

    return order()


async def test_a_provisioned_machine_joins_the_cluster_turns_ready_and_leaves_when_deprovisioned(
    client: Client, bed: tuple[VMTestBed, Settings], tmp_path: Path, ns: str, node_os: OSImage
) -> None:
    tb, _ = bed
    settings = Settings()
    served = tb.boot_dir / "images" / "node.qcow2"
    subprocess.run(["cp", str(node_os.qcow2), str(served)], check=True)
    with ControlPlane(tmp_path / "control-plane", node_address=NET_ADDRESS) as cp:
        await asyncio.to_thread(tb.forward, cp.port)  # NET_ADDRESS:port in the namespace -> loopback
        dom = await asyncio.to_thread(tb.add_domain, "vm-node", 4 * GIB, memory_mib=2048)
        join_kubeconfig = await asyncio.to_thread(install_join_rbac, cp, tmp_path)  # join-rbac.yaml's token
        docs = host_docs(tb, dom.name, dom.mac, tb.redfish_address(dom), ns, join_kubeconfig)
        bmh = docs[-1]["spec"]
        bmh["image"].update(
            url=f"http://{NET_ADDRESS}:{tb.boot_port}/images/node.qcow2", checksum=node_os.qcow2_sha256
        )

        async def apply() -> HostRef:
            hostfile = tmp_path / "hosts.yaml"
            hostfile.write_text(yaml.safe_dump_all(docs))
            [host] = await asyncio.to_thread(load_hosts, hostfile, tmp_path / "secrets")
            await operations.apply(client, host, settings)
            return host.ref

        api = config.new_client_from_config(str(cp.admin_kubeconfig))
        core = k8s.CoreV1Api(api)
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(client, settings, executor):
                started = time.monotonic()
                ref = await apply()
                st = await wait_status(
                    client,
                    ref,
                    lambda s: s.provisioning.state == S.PROVISIONED or s.error_type is not None,
                    BUDGET,
                    dom,
                )
                assert st.error_type is None, f"{st.error_message}\n{dom.console()[-5000:]}"
                joined = time.monotonic() - started
                assert st.node is not None and st.node.name == dom.name, st
                assert st.node.provider_id == f"metalflow://{ns}/{dom.name}"
                got = json.loads(
                    await asyncio.to_thread(
                        kubectl, cp.admin_kubeconfig, "get", "node", dom.name, "-o", "json"
                    )
                )
                table = await asyncio.to_thread(kubectl, cp.admin_kubeconfig, "get", "node", "-o", "wide")
                print(f"\n{dom.name}: provisioned and joined at {joined:.0f}s ({tb.accel})\n{table}")
                ready = next(c for c in got["status"]["conditions"] if c["type"] == "Ready")
                assert ready["status"] == "True" and ready["reason"] == "KubeletReady", ready
                assert (
                    got["metadata"]["labels"].items() >= {**LABELS, "metalflow.io/host": ref.host_id}.items()
                )
                assert got["spec"]["taints"] == [TAINT], got["spec"]
                assert got["spec"]["providerID"] == st.node.provider_id
                info = got["status"]["nodeInfo"]
                assert info["kubeletVersion"] == kubernetes_version(), info
                assert info["containerRuntimeVersion"].startswith("containerd://"), info
                assert {"type": "InternalIP", "address": NODE_IP} in got["status"]["addresses"], got["status"]
                # cloud-init grew the root file system into the disk, up to the config drive at its
                # end (growpart): the image's 1.4 GB root alone leaves the kubelet under disk pressure
                assert parse_quantity(got["status"]["capacity"]["ephemeral-storage"]) > 3 * GIB, got["status"]
                csrs = [
                    c
                    for c in k8s.CertificatesV1Api(api).list_certificate_signing_request().items
                    if c.spec.username.startswith("system:bootstrap:")
                ]
                assert len(csrs) == 1 and csrs[0].status.certificate, (
                    "the kubelet's bootstrap CSR was not signed"
                )
                approved = [c.type for c in csrs[0].status.conditions]
                assert approved == ["Approved"], approved
                assert not core.list_namespaced_secret(
                    "kube-system", label_selector=f"metalflow.io/host={ref.host_id}"
                ).items

                # 2. deprovision: the pod is evicted (the real kubelet confirms it), the Node deleted
                pod = await asyncio.to_thread(bound_pod, core, dom.name)
                bmh.pop("image")
                bmh.pop("join")
                await apply()
                st = await wait_status(
                    client,
                    ref,
                    lambda s: s.provisioning.state == S.AVAILABLE or s.error_type is not None,
                    BUDGET,
                    dom,
                )
                assert st.error_type is None and st.node is None, st
                print(f"{dom.name}: drained, deleted and deprovisioned at {time.monotonic() - started:.0f}s")
                with pytest.raises(ApiException) as gone:
                    core.read_node(dom.name)
                assert gone.value.status == 404
                with pytest.raises(ApiException) as evicted:
                    core.read_namespaced_pod(pod, "default")
                assert evicted.value.status == 404
                steps = client.list_workflows(f'WorkflowId STARTS_WITH "{ref.workflow_id}/"')
                cleans = sorted([w.id async for w in steps if w.workflow_type == "CleanHost"])
                order = await activity_order(client, cleans[-1])
                assert order[0] == "kubeadm.leave", order  # before the BMC powers the machine off
        api.close()
