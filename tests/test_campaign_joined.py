"""A campaign over a host that joined a cluster (issue #26's health gate), through the real Temporal
dev server, sushy-emulator and the real control plane: its Node is drained (its pod evicted, the
Node kept) before the change and the reboot, and made schedulable again once the host is back and
the Node Ready. The join itself is tests/test_join.py's (a kubelet stand-in registers the Node)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fixtures.kubeapi import KubeCluster
from kubernetes import client as k8s
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from test_join import bound_pod, kubelet, wait_state
from test_kubeadm_leave import KubeletStandIn
from tests_support import emulator_bios_writes as bios_writes
from tests_support import record

from metalflow.api.campaign import (
    CAMPAIGN_APPLY,
    CAMPAIGN_NODE_DRAIN,
    CAMPAIGN_NODE_READY,
    CAMPAIGN_WAIT,
    Campaign,
    CampaignChange,
    CampaignPhase,
    CampaignSpec,
    LabelSelector,
)
from metalflow.api.models import JoinSpec, SecretRef
from metalflow.api.models import ProvisioningState as S
from metalflow.client import campaigns, operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter, write_secret
from worker.control import build_worker


async def test_a_joined_host_is_drained_before_its_servicing_and_uncordoned_after(
    client: Client, settings: Settings, kube_cluster: KubeCluster, tmp_path: Path, ns: str
) -> None:
    secret = tmp_path / "target.yaml"
    write_secret(secret, {"kubeconfig": kube_cluster.join_kubeconfig.read_text()})
    join = JoinSpec(kubeconfig=SecretRef(name="target", path=str(secret)))
    with kube_cluster.admin_client() as api:
        core = k8s.CoreV1Api(api)
        async with Datacenter(settings, hosts=1, prefix="cj", namespace=ns, image_mib=4) as dc:
            host = dc.host(0, join=join, labels={"rack": "r1"})
            node = host.ref.name
            with ThreadPoolExecutor(max_workers=16) as executor:
                async with build_worker(client, settings, executor):
                    helper = asyncio.create_task(kubelet(dc.emulated[0], kube_cluster))
                    await operations.apply(client, host, settings)
                    await asyncio.wait_for(helper, 240)
                    joined = await wait_state(client, host, S.PROVISIONED)
                    assert joined.node is not None and joined.node.name == node
                    pod = await asyncio.to_thread(bound_pod, core, node)
                    c = Campaign(
                        name="turbo-off",
                        namespace=ns,
                        spec=CampaignSpec(
                            selector=LabelSelector(match_labels={"rack": "r1"}),
                            change=CampaignChange(firmware_settings={"ProcTurboMode": "Disabled"}),
                            canary=1,
                        ),
                    )
                    try:
                        with KubeletStandIn(core, node) as stand_in:
                            handle = await campaigns.apply(client, c, settings.task_queue)
                            st = await asyncio.wait_for(handle.result(), 240)
                        after = core.read_node(node)
                        assert not after.spec.unschedulable, "the Node was left cordoned"
                    finally:
                        core.delete_collection_node()
                    assert st.phase == CampaignPhase.SUCCEEDED, st
                    assert stand_in.confirmed == [pod.split("/")[1]], "the pod was not evicted"
                    assert bios_writes(dc, 0) == [{"ProcTurboMode": "Disabled"}]
    # in order: drained, given the change (then rebooted), healthy, Node Ready and uncordoned
    history = await handle.fetch_history()
    order = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    gate = [
        a for a in order if a in (CAMPAIGN_NODE_DRAIN, CAMPAIGN_APPLY, CAMPAIGN_WAIT, CAMPAIGN_NODE_READY)
    ]
    assert gate == [CAMPAIGN_NODE_DRAIN, CAMPAIGN_APPLY, CAMPAIGN_WAIT, CAMPAIGN_NODE_READY], order
    await record(client, c.workflow_id, "campaign-node-gate")
