"""Campaign throughput: one BIOS change rolled across N provisioned emulated hosts in waves.

Real parts on loopback, as bench/fleet.py: the Temporal dev server, the control-plane worker as
its own process, sushy-emulator --fake with N systems (given a BIOS with an attribute registry
and pending-until-boot writes by the test bed), the boot server and N emulated servers. The hosts
are provisioned first by a FleetWorkflow (not timed here: bench/fleet.py times that); then one
CampaignWorkflow gives them `ProcTurboMode: Disabled` (canary 1, waves of --wave). Prints the
campaign's wall time, hosts/min, the dev server's and the worker's CPU per host, the worker's peak
RSS, and how many BIOS PATCHes the emulator took per host; asserts nothing.
Run: .venv/bin/python -m bench.campaign --hosts 200 --wave 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.context import load, preamble
from bench.fleet import bench_env, cpu_seconds, peak_rss_mib, start_engine
from metalflow.api.campaign import (
    CAMPAIGN_WORKFLOW,
    Campaign,
    CampaignChange,
    CampaignSpec,
    CampaignStatus,
    HostPhase,
    LabelSelector,
)
from metalflow.client.fleet import start_fleet
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.processes import Process, free_port

LABELS = {"bench": "campaign"}
CHANGE = {"ProcTurboMode": "Disabled"}


def bios_patches(log: str) -> Counter[str]:
    """BIOS PATCHes per system, from the emulator's log (testbed/sushy_bios.py logs each)."""
    marker = "metalflow-testbed: BIOS PATCH "
    return Counter(line.split(marker, 1)[1].split()[0] for line in log.splitlines() if marker in line)


async def run(hosts: int, wave: int, limit: int) -> None:
    with tempfile.TemporaryDirectory(prefix="metalflow-campaign-bench-") as tmp:
        root = Path(tmp)
        port = free_port()
        env = bench_env(root, port, limit)
        settings = Settings()
        engine = start_engine("dev", root, port, "FULL")
        worker = Process("worker", [sys.executable, "-m", "metalflow", "worker"], root / "worker.log", env)
        try:
            client = await Client.connect(settings.temporal_address, data_converter=pydantic_data_converter)
            async with Datacenter(settings, hosts=hosts, prefix="bench", image_mib=4) as dc:
                assert dc.sushy is not None
                fleet = [
                    h.model_copy(update={"spec": h.spec.model_copy(update={"labels": LABELS})})
                    for h in dc.all_hosts()
                ]
                t0 = time.monotonic()
                started = await start_fleet(
                    client, fleet, fleet_id="fleet/bench", task_queue=settings.task_queue, limit=limit
                )
                provisioned = await started.result()
                ready = provisioned.by_state.get("provisioned", 0)
                print(
                    f"  provisioned {ready}/{hosts} in {time.monotonic() - t0:.0f}s (not the figure)",
                    flush=True,
                )
                campaign = Campaign(
                    name="bench",
                    spec=CampaignSpec(
                        selector=LabelSelector(match_labels=LABELS),
                        change=CampaignChange(firmware_settings=CHANGE),
                        canary=1,
                        max_unavailable=wave,
                    ),
                )
                server_cpu0, worker_cpu0 = engine.cpu(), cpu_seconds(worker.pid)
                start = time.monotonic()
                handle = await client.start_workflow(
                    CAMPAIGN_WORKFLOW,
                    campaign,
                    id=campaign.workflow_id,
                    task_queue=settings.task_queue,
                    result_type=CampaignStatus,
                )
                result = await handle.result()
                elapsed = time.monotonic() - start
                server_cpu, worker_cpu = engine.cpu() - server_cpu0, cpu_seconds(worker.pid) - worker_cpu0
                worker_rss = peak_rss_mib(worker.pid)
                patches = bios_patches(dc.sushy.process.log_path.read_text())
        finally:
            worker.stop()
            engine.stop()
    done = result.count(HostPhase.DONE)
    print(f"campaign on {engine.name}: {hosts} hosts, canary 1 then waves of {wave}, {os.cpu_count()} cores")
    print(
        f"  {result.phase.value}: {done}/{result.total} serviced, {result.count(HostPhase.FAILED)} failed, "
        f"{result.waves} waves in {elapsed:.0f}s -> {done / (elapsed / 60):.0f} hosts/min"
    )
    per_host = Counter(patches.values())
    print(
        "  BIOS PATCHes per host at the emulator (PATCHes: hosts): "
        + json.dumps(dict(sorted(per_host.items())))
    )
    d = max(done, 1)
    print(
        f"  control plane CPU per host: dev server {server_cpu / d:.2f}s, worker {worker_cpu / d:.2f}s; "
        f"worker peak RSS {worker_rss:.0f} MiB"
    )
    print(f"after: {load()}", flush=True)


async def main(hosts: int, wave: int, limit: int) -> None:
    logging.getLogger("sushy").setLevel(logging.CRITICAL)
    print(preamble("bench.campaign"), flush=True)
    await run(hosts, wave, limit)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--hosts", type=int, default=200)
    p.add_argument(
        "--wave", type=int, default=20, help="maxUnavailable: hosts serviced at once after the canary"
    )
    p.add_argument(
        "--limit", type=int, default=40, help="the provisioning limit while the fleet is provisioned"
    )
    a = p.parse_args()
    asyncio.run(main(a.hosts, a.wave, a.limit))
