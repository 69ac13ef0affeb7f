"""MachineSetWorkflow: keep N alike hosts deployed from one claim template (`machineset/<ns>/<name>`).

Scaling up files claims with the namespace's allocator; scaling down releases the newest
(the host is deprovisioned per automatedCleaningMode). A member whose host falls into error
is replaced by a fresh claim. A new template image rolls through the members, at most
maxUnavailable re-imaging at a time.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from metalflow.api.claims import Claim, ClaimPhase, ClaimStatus, MachineSetSpec, MachineSetStatus
from metalflow.api.models import HostRef
from metalflow.api.pools import (
    MACHINESET_WORKFLOW,
    POOL_ASSIGN,
    POOL_CLAIM,
    POOL_STATUS,
    POOL_UNCLAIM,
    Assignment,
    HostHealth,
    MachineSetInput,
)
from workflows.options import LOCAL_RETRY, LOCAL_TIMEOUT

RECONCILE_EVERY = timedelta(seconds=3)


@workflow.defn(name=MACHINESET_WORKFLOW)
class MachineSetWorkflow:
    @workflow.init
    def __init__(self, state: MachineSetInput) -> None:
        self._s = state
        self._health: dict[str, HostHealth] = {}
        self._poked = False

    @workflow.update
    async def apply(self, spec: MachineSetSpec) -> MachineSetStatus:
        self._s.spec = spec
        self._poked = True
        return self.status()

    @workflow.query
    def status(self) -> MachineSetStatus:
        target = self._s.spec.template.image.url
        hosts = [h for h in self._s.members.values() if h is not None]
        ready = sum(
            1
            for h in hosts
            if (hh := self._health.get(h.host_id)) and hh.state == "provisioned" and hh.image_url == target
        )
        return MachineSetStatus(
            replicas=self._s.spec.replicas,
            ready=ready,
            hosts=sorted(hosts, key=lambda r: r.name),
            pending=[
                ClaimStatus(id=cid, phase=ClaimPhase.PENDING, reason=self._s.pending_reasons.get(cid, ""))
                for cid, h in self._s.members.items()
                if h is None
            ],
            replaced=self._s.replaced,
            image_url=target,
        )

    @workflow.run
    async def run(self, state: MachineSetInput) -> None:
        while True:
            await self._reconcile()
            self._poked = False
            try:
                await workflow.wait_condition(lambda: self._poked, timeout=RECONCILE_EVERY)
            except TimeoutError:
                pass
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._s)

    def _claim(self, claim_id: str) -> Claim:
        return Claim(
            id=claim_id,
            namespace=self._s.namespace,
            spec=self._s.spec.template,
            owner=f"machineset/{self._s.namespace}/{self._s.name}",
        )

    async def _submit(self, claim_id: str) -> None:
        got = await workflow.execute_activity(
            POOL_CLAIM,
            self._claim(claim_id),
            result_type=ClaimStatus,
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
            summary=f"claim {claim_id}",
        )
        if got.phase == ClaimPhase.GRANTED:
            self._s.members[claim_id] = got.host
            self._s.pending_reasons.pop(claim_id, None)
        else:
            self._s.pending_reasons[claim_id] = got.reason

    async def _withdraw(self, claim_id: str) -> None:
        host = self._s.members.pop(claim_id, None)
        self._s.pending_reasons.pop(claim_id, None)
        await workflow.execute_activity(
            POOL_UNCLAIM,
            Assignment(claim_id=claim_id, host=host or HostRef(namespace=self._s.namespace, name="none")),
            result_type=ClaimStatus,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=LOCAL_RETRY,
            summary=f"release {claim_id}",
        )

    async def _reconcile(self) -> None:
        spec = self._s.spec
        while len(self._s.members) < spec.replicas:
            self._s.seq += 1
            self._s.members[f"{self._s.name}-{self._s.seq}"] = None
        for claim_id in sorted(self._s.members, key=lambda c: int(c.rsplit("-", 1)[1]))[spec.replicas :]:
            await self._withdraw(claim_id)  # scale down: newest first
        for claim_id, host in list(self._s.members.items()):
            if host is None:
                await self._submit(claim_id)
        hosts = [h for h in self._s.members.values() if h is not None]
        if not hosts:
            return
        health = await workflow.execute_activity(
            POOL_STATUS,
            hosts,
            result_type=list[HostHealth],
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
            summary="check members",
        )
        self._health = {h.host.host_id: h for h in health}
        for claim_id, host in list(self._s.members.items()):
            h = self._health.get(host.host_id) if host else None
            if h is not None and (h.error_type or not h.exists):
                workflow.logger.info(
                    "replacing %s: host %s is %s", claim_id, h.host.name, h.error_type or "gone"
                )
                await self._withdraw(claim_id)
                self._s.replaced += 1
                self._s.seq += 1
                self._s.members[f"{self._s.name}-{self._s.seq}"] = None
        await self._roll(spec)

    async def _roll(self, spec: MachineSetSpec) -> None:
        """Re-image members whose image is not the template's, maxUnavailable at a time."""
        target = spec.template.image.url
        members = [(c, h) for c, h in self._s.members.items() if h is not None and h.host_id in self._health]
        unavailable = sum(
            1
            for _, h in members
            if self._health[h.host_id].spec_image_url == target
            and (
                self._health[h.host_id].state != "provisioned" or self._health[h.host_id].image_url != target
            )
        )
        for claim_id, host in members:
            if unavailable >= spec.max_unavailable:
                break
            if self._health[host.host_id].spec_image_url != target:
                await workflow.execute_activity(
                    POOL_ASSIGN,
                    Assignment(claim_id=claim_id, host=host, spec=spec.template),
                    start_to_close_timeout=LOCAL_TIMEOUT,
                    retry_policy=LOCAL_RETRY,
                    summary=f"re-image {host.name}",
                )
                unavailable += 1
