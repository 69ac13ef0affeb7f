"""The control-plane worker: host workflows plus BMC, boot, config-drive and status activities."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio.client import Client
from temporalio.worker import Interceptor, UnsandboxedWorkflowRunner, Worker

from metalflow.runtime import metrics
from metalflow.runtime.settings import Settings, get_settings
from metalflow.runtime.temporal import connect
from workflows import all_workflows, sandbox_runner

log = logging.getLogger(__name__)


def control_activities() -> list[Any]:
    from activities import (
        agent_replies,
        campaign,
        configdrive,
        firmware_status,
        fleet,
        kubeadm,
        node_gate,
        oci,
        pool,
        power_sync,
        status,
    )
    from activities.bmc import ACTIVITIES as BMC
    from activities.boot import ACTIVITIES as BOOT

    return [
        *BMC,
        *BOOT,
        *configdrive.ACTIVITIES,
        *agent_replies.ACTIVITIES,
        *oci.ACTIVITIES,
        *kubeadm.ACTIVITIES,
        *pool.ACTIVITIES,
        *fleet.ACTIVITIES,
        *power_sync.ACTIVITIES,
        *status.ACTIVITIES,
        *firmware_status.ACTIVITIES,
        *campaign.ACTIVITIES,
        *node_gate.ACTIVITIES,
    ]


def build_worker(
    client: Client, settings: Settings, executor: ThreadPoolExecutor, interceptors: Sequence[Interceptor] = ()
) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=all_workflows(),
        activities=control_activities(),
        activity_executor=executor,
        max_concurrent_activities=executor._max_workers,
        max_cached_workflows=settings.max_cached_workflows,
        workflow_runner=sandbox_runner() if settings.workflow_sandbox else UnsandboxedWorkflowRunner(),
        interceptors=interceptors,
    )


async def run_worker(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    client = await connect(settings, runtime=metrics.sdk_runtime(settings.sdk_metrics_address))
    metrics.serve(settings.metrics_address, metrics.HostCountCollector(client, asyncio.get_running_loop()))
    with ThreadPoolExecutor(max_workers=64, thread_name_prefix="activity") as executor:
        worker = build_worker(client, settings, executor)
        log.info("control-plane worker polling %s on %s", settings.task_queue, settings.temporal_address)
        await worker.run()
