"""HostClaim and HostSet objects (metalflow.io/v1alpha1) -> the allocator and machine-set workflows.

Stateless like the BareMetalHost bridge: a HostClaim's claim id is its name, a HostSet's
workflow is `machineset/<ns>/<name>`, and `status.observedGeneration` records which spec the
workflow has been given. Grants, pending reasons and ready replicas change inside Temporal
without a Kubernetes event, so an object whose workflow is still converging is looked at
again after a short delay (controller-runtime's RequeueAfter) and its status rewritten when
it changed.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from k8s_bridge.controller import Controller
from k8s_bridge.reconcile import Fingerprint, Plan, fingerprint
from metalflow.api.claims import Claim, ClaimPhase, ClaimSpec, ClaimStatus, MachineSetSpec, MachineSetStatus
from metalflow.api.kube_names import HOSTCLAIM_PLURAL, HOSTSET_PLURAL, METALFLOW_GROUP, METALFLOW_VERSION
from metalflow.client import pools

log = logging.getLogger(__name__)

CONVERGING_POLL = 2.0
SETTLED_POLL = 15.0


def _explain(err: ValidationError, prefix: str) -> str:
    return "; ".join(f"{prefix}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())


def claim_spec(spec: dict[str, Any], namespace: str, prefix: str = "spec") -> ClaimSpec:
    """A HostClaim spec (Metal3Machine's hostSelector/image/userData shape) as a ClaimSpec."""
    raw = {k: v for k, v in spec.items() if k != "hostSelector"}
    if spec.get("hostSelector") is not None:
        raw["selector"] = spec["hostSelector"]
    for field in ("userData", "networkData"):
        if isinstance(raw.get(field), dict):
            raw[field] = {"namespace": namespace, **raw[field]}
    if isinstance(raw.get("join"), dict) and isinstance(raw["join"].get("kubeconfig"), dict):
        raw["join"] = {**raw["join"], "kubeconfig": {"namespace": namespace, **raw["join"]["kubeconfig"]}}
    try:
        return ClaimSpec.model_validate(raw)
    except ValidationError as err:
        raise ValueError(_explain(err, prefix)) from None


class _PoolController(Controller):
    group, version = METALFLOW_GROUP, METALFLOW_VERSION

    def _key(self, obj: dict[str, Any]) -> tuple[str, str]:
        meta = obj["metadata"]
        return meta.get("namespace") or "default", meta["name"]

    def _set_finalizers(self, obj: dict[str, Any], finalizers: list[str]) -> None:
        ns, name = self._key(obj)
        patch = {
            "metadata": {"finalizers": finalizers, "resourceVersion": obj["metadata"]["resourceVersion"]}
        }
        self._api.patch_namespaced_custom_object(self.group, self.version, ns, self.plural, name, patch)

    def _write_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        """Patch status only when it changed: a no-op write would still cost an event."""
        current = obj.get("status") or {}
        if all(current.get(k) == v for k, v in status.items()):
            return
        ns, name = self._key(obj)
        self._api.patch_namespaced_custom_object_status(
            self.group, self.version, ns, self.plural, name, {"status": status}
        )

    async def _ensure_finalizer(self, obj: dict[str, Any]) -> None:
        finalizers = list(obj["metadata"].get("finalizers") or [])
        if self.finalizer not in finalizers:
            await self.blocking(self._set_finalizers, obj, [*finalizers, self.finalizer])

    async def _drop_finalizer(self, obj: dict[str, Any]) -> None:
        finalizers = list(obj["metadata"].get("finalizers") or [])
        await self.blocking(self._set_finalizers, obj, [f for f in finalizers if f != self.finalizer])

    def _after(self, obj: dict[str, Any], plan: Plan) -> Fingerprint:
        return fingerprint(obj, plan, finalizer=self.finalizer)


class ClaimController(_PoolController):
    """HostClaim: one host chosen by the namespace's allocator; consumerRef names the HostClaim."""

    plural = HOSTCLAIM_PLURAL
    finalizer = "metalflow.io/hostclaim"

    async def _current(self, ns: str, claim_id: str) -> ClaimStatus | None:
        try:
            found = await pools.claims(self._temporal, ns)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None  # no allocator in this namespace yet
            raise
        return next((c for c in found if c.id == claim_id), None)

    async def handle(self, obj: dict[str, Any]) -> Fingerprint:
        ns, name = self._key(obj)
        meta = obj["metadata"]
        queue = self._settings.task_queue
        if meta.get("deletionTimestamp"):
            if self.finalizer in (meta.get("finalizers") or []):
                current = await self._current(ns, name)
                if current is not None and current.phase != ClaimPhase.RELEASED:
                    await pools.release(self._temporal, ns, name, queue)  # the host deprovisions
                await self._drop_finalizer(obj)
            return self._after(obj, Plan(remove_finalizer=True))
        await self._ensure_finalizer(obj)
        done = self._after(obj, Plan(add_finalizer=True))
        generation = meta.get("generation")
        try:
            spec = claim_spec(obj.get("spec") or {}, ns)
        except ValueError as err:
            status = {"phase": "Invalid", "host": None, "reason": str(err), "observedGeneration": generation}
            await self.blocking(self._write_status, obj, status)
            return done
        current = await self._current(ns, name)
        if current is None or current.phase == ClaimPhase.RELEASED:
            claim = Claim(id=name, namespace=ns, spec=spec, owner=f"hostclaim/{ns}/{name}", kind="HostClaim")
            current = await pools.claim(self._temporal, claim, queue)
        host = {"name": current.host.name, "namespace": current.host.namespace} if current.host else None
        status = {
            "phase": current.phase.value,
            "host": host,
            "reason": current.reason,
            "observedGeneration": generation,
        }
        await self.blocking(self._write_status, obj, status)
        if current.phase == ClaimPhase.PENDING:
            self.requeue_after(obj, CONVERGING_POLL)
        return done


class SetController(_PoolController):
    """HostSet: a MachineSetWorkflow keeping spec.replicas claims from spec.template alive."""

    plural = HOSTSET_PLURAL
    finalizer = "metalflow.io/hostset"

    async def _running(self, ns: str, name: str) -> bool:
        try:
            desc = await self._temporal.get_workflow_handle(pools.machineset_id(ns, name)).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return desc.status == WorkflowExecutionStatus.RUNNING

    async def handle(self, obj: dict[str, Any]) -> Fingerprint:
        ns, name = self._key(obj)
        meta = obj["metadata"]
        queue = self._settings.task_queue
        spec_obj = obj.get("spec") or {}
        if meta.get("deletionTimestamp"):
            if self.finalizer in (meta.get("finalizers") or []):
                await self._delete(obj, ns, name)
            return self._after(obj, Plan())
        await self._ensure_finalizer(obj)
        done = self._after(obj, Plan(add_finalizer=True))
        generation = meta.get("generation")
        try:
            spec = MachineSetSpec(
                replicas=spec_obj.get("replicas", 0),
                max_unavailable=spec_obj.get("maxUnavailable", 1),
                template=claim_spec(
                    (spec_obj.get("template") or {}).get("spec") or {}, ns, "spec.template.spec"
                ),
            )
        except (ValueError, ValidationError) as err:
            reason = _explain(err, "spec") if isinstance(err, ValidationError) else str(err)
            await self.blocking(self._write_status, obj, {"reason": reason, "observedGeneration": generation})
            return done
        observed = (obj.get("status") or {}).get("observedGeneration")
        if observed != generation or not await self._running(ns, name):
            st = await pools.apply_machineset(self._temporal, ns, name, spec, queue)
        else:
            st = await pools.machineset_status(self._temporal, ns, name)
        await self.blocking(self._write_status, obj, self._status(st, generation))
        settled = st.ready == st.replicas == len(st.hosts) and not st.pending
        self.requeue_after(obj, SETTLED_POLL if settled else CONVERGING_POLL)
        return done

    @staticmethod
    def _status(st: MachineSetStatus, generation: int | None) -> dict[str, Any]:
        return {
            "replicas": len(st.hosts),
            "readyReplicas": st.ready,
            "hosts": [{"name": h.name, "namespace": h.namespace} for h in st.hosts],
            "pending": [{"claim": p.id, "reason": p.reason} for p in st.pending],
            "replaced": st.replaced,
            "image": st.image_url,
            "reason": "",
            "observedGeneration": generation,
        }

    async def _delete(self, obj: dict[str, Any], ns: str, name: str) -> None:
        """Scale to zero (every host released and deprovisioned), then end the set and let go."""
        if await self._running(ns, name):
            current = await pools.machineset_status(self._temporal, ns, name)
            if current.replicas != 0:
                spec_obj = obj.get("spec") or {}
                template = claim_spec((spec_obj.get("template") or {}).get("spec") or {}, ns)
                current = await pools.apply_machineset(
                    self._temporal,
                    ns,
                    name,
                    MachineSetSpec(replicas=0, template=template),
                    self._settings.task_queue,
                )
            if current.hosts or current.pending:
                self.requeue_after(obj, CONVERGING_POLL)
                return
            await self._temporal.get_workflow_handle(pools.machineset_id(ns, name)).terminate(
                reason=f"HostSet {ns}/{name} deleted; all hosts released"
            )
        await self._drop_finalizer(obj)
