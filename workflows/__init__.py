"""Workflows: the host lifecycle and its steps. `all_workflows()` is what a worker registers."""

from __future__ import annotations

import importlib
import pkgutil

from temporalio import workflow
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from metalflow.api.states import step_workflows


def all_workflows() -> list[type]:
    """Every `@workflow.defn` class in this package's modules, found by scanning them, so a new
    step workflow is registered by existing; fails if the lifecycle table names one that is not."""
    found: dict[str, type] = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        for obj in vars(importlib.import_module(f"{__name__}.{module}")).values():
            # the SDK's own lookup (exported by temporalio.workflow): None unless obj is decorated
            defn = workflow._Definition.from_class(obj) if isinstance(obj, type) else None
            if defn is None or defn.name is None:
                continue
            if found.setdefault(defn.name, obj) is not obj:
                raise RuntimeError(f"two workflows named {defn.name!r}: {found[defn.name]} and {obj}")
    missing = step_workflows() - found.keys()
    if missing:
        raise RuntimeError(f"the lifecycle table names workflows no module defines: {sorted(missing)}")
    return list(found.values())


def sandbox_runner() -> SandboxedWorkflowRunner:
    """The sandbox with every module passed through: loaded once per worker, not once per workflow
    run. Re-importing the workflow modules for each new run (every step is a child workflow, so
    five runs per host) was an eighth of the worker's CPU (`bench.fleet --profile`). The runtime
    restrictions stay (a workflow still cannot read the clock, sleep or do I/O); what is given up
    is a fresh copy of module globals per run, and no module here keeps mutable state."""
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_all_modules())
