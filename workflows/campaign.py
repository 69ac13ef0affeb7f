"""CampaignWorkflow: one firmware change rolled across the provisioned hosts a selector picks.

The change is checked against every selected host's BMC attribute registry before any host is
touched (an invalid setting fails the campaign with nothing changed). Then the canary wave, then
waves of `maxUnavailable`: each host gets the change in its spec (HostUpdatePolicy `onReboot`)
and a reboot signal, and its own servicing applies it; the health gate waits until it is
provisioned and powered on with the change applied. A failed canary halts before the first
wave; failures beyond `failureBudget` halt after their wave; the rest stay untouched. Pause holds
the next wave; abort lets the hosts in flight finish and starts no other. The reboot signal is a
workflow command, recorded once: a worker killed mid-wave resumes without touching a host twice.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from metalflow.api.campaign import (
    ABORT_SIGNAL,
    CAMPAIGN_APPLY,
    CAMPAIGN_DRIFT,
    CAMPAIGN_NODE_DRAIN,
    CAMPAIGN_NODE_READY,
    CAMPAIGN_TARGETS,
    CAMPAIGN_WAIT,
    CAMPAIGN_WORKFLOW,
    PAUSE_SIGNAL,
    RESUME_SIGNAL,
    STATUS_QUERY,
    Campaign,
    CampaignDrift,
    CampaignHost,
    CampaignPhase,
    CampaignSelect,
    CampaignStatus,
    CampaignTarget,
    DriftRequest,
    HostChange,
    HostOutcome,
    HostPhase,
    waves,
)
from metalflow.api.firmware import setting_problems
from metalflow.api.join import LeaveRequest, LeaveResult, NodeInfo
from metalflow.api.models import ProvisioningState
from metalflow.api.search_attributes import CAMPAIGN_PHASE
from workflows import bmc_calls, patches
from workflows.options import LOCAL_RETRY

SEARCH_PATCH = "campaign-phase-search-attribute"  # histories from before it set none
DRIFT_PATCH = "campaign-drift-report"
NODE_GATE_PATCH = "campaign-node-gate"  # joined hosts: drained before, Ready and uncordoned after


@workflow.defn(name=CAMPAIGN_WORKFLOW)
class CampaignWorkflow:
    def __init__(self) -> None:
        self._status = CampaignStatus()
        self._paused = False
        self._aborted = False

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> CampaignStatus:
        return self._status

    @workflow.signal(name=PAUSE_SIGNAL)
    def pause(self) -> None:
        self._paused = True
        if self._status.phase == CampaignPhase.RUNNING:
            self._set_phase(CampaignPhase.PAUSED)

    @workflow.signal(name=RESUME_SIGNAL)
    def resume(self) -> None:
        self._paused = False
        if self._status.phase == CampaignPhase.PAUSED:
            self._set_phase(CampaignPhase.RUNNING)

    @workflow.signal(name=ABORT_SIGNAL)
    def abort(self) -> None:
        self._aborted = True

    @workflow.run
    async def run(self, campaign: Campaign) -> CampaignStatus:
        spec = campaign.spec
        found: list[CampaignTarget] = await workflow.execute_activity(
            CAMPAIGN_TARGETS,
            CampaignSelect(namespace=campaign.namespace, selector=spec.selector),
            result_type=list[CampaignTarget],
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=LOCAL_RETRY,
            summary="hosts the selector picks",
        )
        targets = [t for t in found if _skip_reason(t) is None]
        self._status.hosts = [
            CampaignHost(ref=t.ref, phase=HostPhase.SKIPPED, message=reason)
            for t in found
            if (reason := _skip_reason(t)) is not None
        ] + [CampaignHost(ref=t.ref) for t in targets]
        rows = {h.ref.name: h for h in self._status.hosts}
        problems = await self._check(campaign, targets)
        if problems:
            return await self._end(
                campaign, CampaignPhase.FAILED, "nothing was changed: " + "; ".join(problems)
            )
        plan = waves(len(targets), spec.canary, spec.max_unavailable)
        self._status.waves = len(plan)
        self._set_phase(CampaignPhase.PAUSED if self._paused else CampaignPhase.RUNNING)
        for i, wave in enumerate(plan):
            await workflow.wait_condition(lambda: not self._paused or self._aborted)
            if self._aborted:
                return await self._end(campaign, CampaignPhase.ABORTED, f"aborted before wave {i}")
            self._status.wave = i
            self._details()
            hosts = [rows[targets[j].ref.name] for j in wave]
            for host in hosts:
                host.wave = i
            await asyncio.gather(
                *(self._service(campaign, rows[targets[j].ref.name], targets[j]) for j in wave)
            )
            failed = self._status.count(HostPhase.FAILED)
            if i == 0 and spec.canary and any(h.phase == HostPhase.FAILED for h in hosts):
                return await self._end(
                    campaign, CampaignPhase.HALTED, "the canary failed: " + _failures(hosts)
                )
            if failed > spec.failure_budget:
                return await self._end(
                    campaign,
                    CampaignPhase.HALTED,
                    f"{failed} hosts failed, over the failure budget of {spec.failure_budget}: "
                    + _failures(self._status.hosts),
                )
        return await self._end(
            campaign, CampaignPhase.SUCCEEDED, f"{self._status.count(HostPhase.DONE)} hosts serviced"
        )

    async def _check(self, campaign: Campaign, targets: list[CampaignTarget]) -> list[str]:
        """The settings against every host's BMC registry (reads only), before any host changes."""
        desired = campaign.spec.change.firmware_settings
        if not desired or not targets:
            return []
        states = await asyncio.gather(*(bmc_calls.read_bios(t.spec) for t in targets))
        return [
            f"{t.ref.name}: {problem}"
            for t, state in zip(targets, states, strict=True)
            for problem in setting_problems(desired, state.schema_)
        ]

    async def _service(self, campaign: Campaign, host: CampaignHost, target: CampaignTarget) -> None:
        """One host: drained (when it joined a cluster), the change, the reboot, the health gate
        (and its Node Ready and schedulable again). A failure is the host's, named in its row."""
        host.phase = HostPhase.UPDATING
        gate = _node_gate(target) if target.node is not None and patches.patched(NODE_GATE_PATCH) else None
        healthy = timedelta(seconds=campaign.spec.health_timeout_seconds)
        try:
            if gate is not None:
                await workflow.execute_activity(
                    CAMPAIGN_NODE_DRAIN,
                    gate,
                    result_type=LeaveResult,
                    start_to_close_timeout=timedelta(seconds=gate.drain_timeout_seconds + 120),
                    heartbeat_timeout=timedelta(seconds=60),
                    retry_policy=LOCAL_RETRY,
                    summary=f"drain Node {gate.node.name}",
                )
            change = HostChange(
                host=host.ref, change=campaign.spec.change, campaign=workflow.info().workflow_id
            )
            await workflow.execute_activity(
                CAMPAIGN_APPLY,
                change,
                start_to_close_timeout=timedelta(minutes=5),  # a BareMetalHost's: until the bridge carried it
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=LOCAL_RETRY,
                summary=f"give {host.ref.name} the change",
            )
            await workflow.get_external_workflow_handle(host.ref.workflow_id).signal("reboot")
            outcome: HostOutcome = await workflow.execute_activity(
                CAMPAIGN_WAIT,
                change,
                result_type=HostOutcome,
                schedule_to_close_timeout=healthy,  # the gate: retries after a crash fit in it
                heartbeat_timeout=timedelta(seconds=20),  # it beats every 2 s, from a task of its own
                retry_policy=LOCAL_RETRY,
                summary=f"wait for {host.ref.name} to be serviced and healthy",
            )
            if outcome.ok and gate is not None:
                await workflow.execute_activity(
                    CAMPAIGN_NODE_READY,
                    gate,
                    result_type=NodeInfo,
                    schedule_to_close_timeout=healthy,
                    heartbeat_timeout=timedelta(seconds=60),
                    retry_policy=LOCAL_RETRY,
                    summary=f"wait for Node {gate.node.name} to be Ready, then uncordon it",
                )
        except ActivityError as err:
            outcome = HostOutcome(ok=False, message=str(err.cause or err))
        host.phase = HostPhase.DONE if outcome.ok else HostPhase.FAILED
        host.message = outcome.message
        self._details()

    def _details(self) -> None:
        st = self._status
        workflow.set_current_details(
            f"{st.phase.value}: wave {st.wave + 1}/{st.waves}, {st.count(HostPhase.DONE)}/{st.total} done, "
            f"{st.count(HostPhase.FAILED)} failed"
        )

    def _set_phase(self, phase: CampaignPhase) -> None:
        """The phase in status and, since SEARCH_PATCH, in the CampaignPhase search attribute."""
        self._status.phase = phase
        if patches.patched(SEARCH_PATCH):
            workflow.upsert_search_attributes([CAMPAIGN_PHASE.value_set(phase.value)])

    async def _end(self, campaign: Campaign, phase: CampaignPhase, message: str) -> CampaignStatus:
        """The campaign's end: the selected hosts' drift from the change (since DRIFT_PATCH)."""
        hosts = [h.ref for h in self._status.hosts]
        if hosts and patches.patched(DRIFT_PATCH):
            self._status.drift = await workflow.execute_activity(
                CAMPAIGN_DRIFT,
                DriftRequest(hosts=hosts, change=campaign.spec.change),
                result_type=list[CampaignDrift],
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=LOCAL_RETRY,
                summary="hosts whose firmware differs from the change",
            )
        self._set_phase(phase)
        self._status.message = message
        self._details()
        return self._status


def _skip_reason(target: CampaignTarget) -> str | None:
    if target.state != ProvisioningState.PROVISIONED.value:
        return f"{target.state}: servicing is for provisioned hosts"
    return None


def _node_gate(target: CampaignTarget) -> LeaveRequest:
    assert target.node is not None
    timeout = target.spec.join.drain_timeout_seconds if target.spec.join else 900
    return LeaveRequest(host=target.ref, node=target.node, drain_timeout_seconds=timeout)


def _failures(hosts: list[CampaignHost]) -> str:
    return "; ".join(f"{h.ref.name}: {h.message}" for h in hosts if h.phase == HostPhase.FAILED)
