"""Where a patch moved a lifecycle stage (metalflow.api.states.Stage), for replaying histories."""

from __future__ import annotations

from temporalio import workflow

from metalflow.api.states import Stage


def stage_allowed(stage: Stage) -> bool:
    """A stage moved by a patch runs at its new place in new histories, at its old in old ones."""
    if stage.patch:
        return workflow.patched(stage.patch)
    return not (stage.unpatched and workflow.patched(stage.unpatched))
