"""Workflows: the host lifecycle and its steps. `WORKFLOWS` is what a worker registers."""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions


def all_workflows() -> list[type]:
    from workflows.allocator import AllocatorWorkflow
    from workflows.clean import CleanHost
    from workflows.deploy import DeployHost
    from workflows.fleet import FleetWorkflow
    from workflows.host import HostWorkflow
    from workflows.inspect import InspectHost
    from workflows.join import JoinCluster
    from workflows.limiter import ProvisioningLimiter
    from workflows.machineset import MachineSetWorkflow
    from workflows.power_off import PowerOffHost
    from workflows.register import RegisterHost

    return [
        HostWorkflow,
        RegisterHost,
        InspectHost,
        CleanHost,
        DeployHost,
        JoinCluster,
        PowerOffHost,
        AllocatorWorkflow,
        MachineSetWorkflow,
        ProvisioningLimiter,
        FleetWorkflow,
    ]


def sandbox_runner() -> SandboxedWorkflowRunner:
    """The sandbox, with our pure contract modules passed through (loaded once, not per run)."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "metalflow", "pydantic", "pydantic_core", "annotated_types", "metalflow.api.bmc_address"
        )
    )
