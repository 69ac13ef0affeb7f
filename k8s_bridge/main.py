"""`metalflow bridge`: watch BareMetalHosts, HostClaims and HostSets and drive their workflows."""

from __future__ import annotations

import asyncio

from k8s_bridge.controller import Bridge
from k8s_bridge.pools import ClaimController, SetController
from metalflow.runtime import metrics
from metalflow.runtime.kube import api_client
from metalflow.runtime.settings import Settings
from metalflow.runtime.temporal import connect


async def run_bridge(settings: Settings) -> None:
    temporal = await connect(settings, runtime=metrics.sdk_runtime(settings.sdk_metrics_address))
    metrics.serve(settings.metrics_address)
    with api_client(settings) as api:
        await asyncio.gather(
            Bridge(api, temporal, settings).run(),
            ClaimController(api, temporal, settings).run(),
            SetController(api, temporal, settings).run(),
        )
