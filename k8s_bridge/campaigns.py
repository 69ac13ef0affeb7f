"""Campaign objects (metalflow.io/v1alpha1) -> CampaignWorkflow (`campaign/<ns>/<name>`).

Stateless like the other controllers: the object's uid is in the workflow's memo, so a Campaign
deleted and created again under its name starts a new run rather than showing the old one's end.
`spec.paused` pauses and resumes; deleting the object aborts a running campaign (hosts in flight
finish) before the finalizer goes. Progress changes inside Temporal without a Kubernetes event,
so a running campaign is looked at again after a short delay and its status rewritten.
"""

from __future__ import annotations

from typing import Any

from temporalio.service import RPCError, RPCStatusCode

from k8s_bridge.pools import CONVERGING_POLL, _PoolController
from k8s_bridge.reconcile import Fingerprint, Plan
from metalflow.api.bmh import ManifestError
from metalflow.api.campaign import (
    ABORT_SIGNAL,
    ENDED,
    PAUSE_SIGNAL,
    RESUME_SIGNAL,
    CampaignPhase,
    CampaignStatus,
    HostPhase,
)
from metalflow.api.kube_names import CAMPAIGN_PLURAL
from metalflow.client import campaigns


class CampaignController(_PoolController):
    plural = CAMPAIGN_PLURAL
    finalizer = "metalflow.io/campaign"

    async def _current(self, ns: str, name: str, uid: str) -> CampaignStatus | None:
        """The status of this object's run; None before it started (or when the name's last run
        belonged to an object since deleted)."""
        handle = campaigns.handle(self._temporal, ns, name)
        try:
            desc = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        if (await desc.memo()).get("uid") != uid:
            return None
        return await campaigns.status(self._temporal, ns, name)

    async def handle(self, obj: dict[str, Any]) -> Fingerprint:
        ns, name = self._key(obj)
        meta = obj["metadata"]
        uid = str(meta.get("uid", ""))
        if meta.get("deletionTimestamp"):
            if self.finalizer in (meta.get("finalizers") or []):
                current = await self._current(ns, name, uid)
                if current is not None and current.phase not in ENDED:
                    await campaigns.signal(self._temporal, ns, name, ABORT_SIGNAL)
                await self._drop_finalizer(obj)
            return self._after(obj, Plan(remove_finalizer=True))
        await self._ensure_finalizer(obj)
        done = self._after(obj, Plan(add_finalizer=True))
        generation = meta.get("generation")
        spec = dict(obj.get("spec") or {})
        paused = bool(spec.pop("paused", False))
        try:
            campaign = campaigns.campaign_from_manifest(
                {**obj, "kind": campaigns.KIND, "spec": spec}, f"Campaign {ns}/{name}"
            )
        except ManifestError as err:
            status = {"phase": "Invalid", "message": str(err), "observedGeneration": generation}
            await self.blocking(self._write_status, obj, status)
            return done
        current = await self._current(ns, name, uid)
        if current is None:
            await campaigns.apply(self._temporal, campaign, self._settings.task_queue, memo={"uid": uid})
            current = await campaigns.status(self._temporal, ns, name)
        if paused and current.phase in (CampaignPhase.CHECKING, CampaignPhase.RUNNING):
            await campaigns.signal(self._temporal, ns, name, PAUSE_SIGNAL)
        elif not paused and current.phase == CampaignPhase.PAUSED:
            await campaigns.signal(self._temporal, ns, name, RESUME_SIGNAL)
        await self.blocking(self._write_status, obj, _status(current, generation))
        if current.phase not in ENDED:
            self.requeue_after(obj, CONVERGING_POLL)
        return done


def _status(st: CampaignStatus, generation: int | None) -> dict[str, Any]:
    return {
        "phase": st.phase.value,
        "message": st.message,
        "wave": st.wave,
        "waves": st.waves,
        "waveLabel": "-" if st.wave < 0 else ("canary" if st.wave == 0 else f"{st.wave}/{st.waves - 1}"),
        "done": st.count(HostPhase.DONE),
        "total": st.total,
        "failed": st.count(HostPhase.FAILED),
        "hosts": [
            {"name": h.ref.name, "phase": h.phase.value, "wave": h.wave, "message": h.message}
            for h in st.hosts
        ],
        "drift": [{"name": d.ref.name, "differences": d.differences} for d in st.drift],
        "observedGeneration": generation,
    }
