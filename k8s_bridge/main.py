"""`metalflow bridge`: watch BareMetalHosts, HostClaims, HostSets and Campaigns and drive their workflows."""

from __future__ import annotations

import asyncio

from kubernetes import client as k8s

from k8s_bridge.campaigns import CampaignController
from k8s_bridge.controller import THREADS, Bridge, RelatedWatch
from k8s_bridge.pools import ClaimController, SetController
from metalflow.api.kube_names import HFC_PLURAL, HFS_PLURAL, HUP_PLURAL
from metalflow.runtime import metrics
from metalflow.runtime.kube import api_client
from metalflow.runtime.settings import Settings
from metalflow.runtime.temporal import connect

WORKERS = 16  # concurrent reconciles per controller (and threads for its Kubernetes calls: THREADS)
# A BareMetalHost reconcile mostly awaits one start_workflow, 0.3-1.3 s on a loaded server: 50
# new hosts a second need 15-65 in flight (Little's law), and 16 capped the bridge at 12-50/s.
BRIDGE_WORKERS = 64
CONTROLLERS = (Bridge, ClaimController, SetController, CampaignController)
RELATED = (HFS_PLURAL, HFC_PLURAL, HUP_PLURAL)  # a RelatedWatch each, beside the Bridge


def bridge_api_client(settings: Settings) -> k8s.ApiClient:
    """One client for the controllers: a kept connection for each reconcile thread and
    for each controller's open watch."""
    return api_client(settings, connections=(len(CONTROLLERS) + len(RELATED)) * (THREADS + 1))


async def run_bridge(settings: Settings) -> None:
    temporal = await connect(settings, runtime=metrics.sdk_runtime(settings.sdk_metrics_address))
    metrics.serve(settings.metrics_address)
    with bridge_api_client(settings) as api:
        bridge = Bridge(api, temporal, settings, workers=BRIDGE_WORKERS)
        pools = (
            c(api, temporal, settings, workers=WORKERS)
            for c in (ClaimController, SetController, CampaignController)
        )
        related = (RelatedWatch(api, bridge, plural, workers=WORKERS) for plural in RELATED)
        await asyncio.gather(bridge.run(), *(c.run() for c in (*related, *pools)))
