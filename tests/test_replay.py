"""Determinism: recorded HostWorkflow histories must replay against the current workflow code.

Histories under tests/histories/ were recorded from real runs (the lifecycle tests write fresh
ones when METALFLOW_RECORD_HISTORIES=1). A change that breaks replay fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows import all_workflows, sandbox_runner

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    doc = json.loads(path.read_text())
    history = WorkflowHistory.from_json(doc["workflowId"], doc["history"])
    replayer = Replayer(
        workflows=all_workflows(), data_converter=pydantic_data_converter, workflow_runner=sandbox_runner()
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


def test_there_are_recorded_histories() -> None:
    names = {p.stem.split("-")[0] for p in HISTORIES}
    assert "HostWorkflow" in names, "record histories: METALFLOW_RECORD_HISTORIES=1 make test"
