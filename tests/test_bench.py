"""The benchmarks' own arithmetic: a figure that counts the wrong hosts is worse than none."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Worker

from bench.engine_floor import SHAPES, FloorHost, FloorStep, listed, run_hosts, runs_per_host, tasks_per_host
from bench.engine_floor import call as floor_call
from bench.fleet import tally
from bench.history_counts import Counts, count
from metalflow.api.fleet import FleetProgress, HostOutcome
from metalflow.api.models import ProvisioningState as S

HISTORIES = Path(__file__).parent / "histories"


def test_fleet_counts_only_hosts_that_reached_provisioned() -> None:
    """FleetProgress.settled counts errors and ended workflows; a timed-out fleet leaves hosts
    that never settled (some never started). Each host lands in exactly one bucket."""
    rows = [
        HostOutcome(name="ok", namespace="d", state=S.PROVISIONED.value, settled=True),
        HostOutcome(
            name="err",
            namespace="d",
            state=S.PROVISIONING.value,
            error_type="ProvisioningError",
            settled=True,
        ),
        HostOutcome(name="apply", namespace="d", error_type="ApplyError", settled=True),
        HostOutcome(name="slow", namespace="d", state=S.INSPECTING.value),
        HostOutcome(name="ended", namespace="d", state=S.AVAILABLE.value, settled=True),
    ]
    result = FleetProgress(total=6, settled=4, hosts=rows, failed=rows[1:3], timed_out=True)
    assert tally(result, total=6) == {
        "provisioned": 1,
        "failed": 2,
        "never settled": 2,  # "slow" and the host no workflow was found for
        "settled elsewhere": 1,
    }


async def test_the_engine_floor_runs_each_shape_as_described(client: Client) -> None:
    """bench.engine_floor's figures are per host of a shape: each shape must cost the workflow
    runs and tasks its description says (child steps: two tasks in the host and one more in the
    child per step), or the floor it prints is the floor of something else."""
    queue = f"floor-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[FloorHost, FloorStep], activities=[floor_call]):
        for shape in SHAPES:
            prefix = f"floor-test/{queue}/{shape.name}"
            await run_hosts(client, shape, prefix, hosts=2, limit=2, task_queue=queue)
            query = f'WorkflowId STARTS_WITH "{prefix}/"'
            await listed(client, query + ' AND ExecutionStatus = "Completed"', 2 * runs_per_host(shape))
            counts = await count(client, query)
            assert counts.runs == 2 * runs_per_host(shape), shape.name
            assert counts.workflow_tasks == 2 * tasks_per_host(shape), shape.name
            assert sum(counts.activities.values()) == 2 * (shape.own + sum(shape.steps)), shape.name


def test_history_counts_tell_patch_markers_from_local_activities() -> None:
    """workflow.patched() records a marker as a local activity does; counting both as local
    activities overstated them (15 a host where there were 2)."""
    doc = json.loads(
        (HISTORIES / "InspectHost-vmedia-deprovision-bg-publish-0002-InspectHost.json").read_text()
    )
    history = WorkflowHistory.from_json(doc["workflowId"], doc["history"])
    counts = Counts()
    counts.add("InspectHost", list(history.events))
    assert (counts.patch_markers, counts.local_activities) == (2, 1)
