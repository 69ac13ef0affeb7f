"""Reconcile one BareMetalHost against its HostWorkflow. Level-triggered and stateless.

Everything the decision needs is in the object (spec, annotations, finalizers, uid) or in
Temporal (the workflow's spec and memo), so a restarted bridge just lists and reconciles
again. Actions are idempotent: a repeated event changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from metalflow.api.bmh import (
    HostNeedsBMC,
    ManifestError,
    firmware_settings_from_manifest,
    firmware_updates_from_manifest,
    host_from_manifest,
    update_policy_from_manifest,
)
from metalflow.api.models import Host, HostRef
from metalflow.client import operations
from metalflow.runtime.settings import Settings

log = logging.getLogger(__name__)

FINALIZER = "baremetalhost.metal3.io"
PAUSED = "baremetalhost.metal3.io/paused"
DETACHED = "baremetalhost.metal3.io/detached"
REBOOT_PREFIX = "reboot.metal3.io"
INSPECT = "inspect.metal3.io"


@dataclass
class Plan:
    """What reconciling one object decided: Kubernetes patches and workflow calls, in order."""

    add_finalizer: bool = False
    remove_finalizer: bool = False
    remove_annotations: list[str] = field(default_factory=list)
    status_error: str | None = None
    waiting_for_bmc: str | None = None  # no spec.bmc: metal3's unmanaged/discovered host
    signals: list[str] = field(default_factory=list)
    apply: bool = False


Fingerprint = tuple[str, str, bool, bool, tuple[tuple[str, str], ...]]


def fingerprint(obj: dict[str, Any], after: Plan | None = None, finalizer: str = FINALIZER) -> Fingerprint:
    """Everything reconcile reads from an object, as it stands once `after` has been applied.

    Status writes and the echo of the bridge's own finalizer/annotation patches leave it
    unchanged, so the events they cause need no reconcile.
    """
    meta = obj.get("metadata") or {}
    finalizers = set(meta.get("finalizers") or [])
    annotations = dict(meta.get("annotations") or {})
    if after is not None:
        if after.add_finalizer:
            finalizers.add(finalizer)
        if after.remove_finalizer:
            finalizers.discard(finalizer)
        for k in after.remove_annotations:
            annotations.pop(k, None)
    return (
        str(meta.get("uid", "")),
        json.dumps(obj.get("spec"), sort_keys=True),
        bool(meta.get("deletionTimestamp")),
        finalizer in finalizers,
        tuple(sorted(annotations.items())),
    )


async def _workflow_state(client: Client, ref: HostRef) -> tuple[WorkflowExecutionStatus | None, str]:
    """The host workflow's status and the BareMetalHost uid it was started for."""
    try:
        desc = await operations.handle_for(client, ref).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None, ""
        raise
    memo = await desc.memo()
    return desc.status, str(memo.get("uid", ""))


@dataclass(frozen=True)
class Related:
    """The objects named for a BareMetalHost that metal3 keeps beside it (None: there is none)."""

    firmware_settings: dict[str, Any] | None = None  # HostFirmwareSettings
    update_policy: dict[str, Any] | None = None  # HostUpdatePolicy
    firmware_components: dict[str, Any] | None = None  # HostFirmwareComponents


def _parse(obj: dict[str, Any], related: Related | None = None) -> tuple[Host | None, str]:
    """The host the manifest describes, with the settings of its HostFirmwareSettings and the
    policy of its HostUpdatePolicy, or why it is not valid (for status.errorMessage).

    A host without spec.bmc raises `HostNeedsBMC`: not an error, the caller waits for one.
    """
    related = related or Related()
    try:
        host = host_from_manifest(obj)
        if related.firmware_settings is not None:
            _, _, settings = firmware_settings_from_manifest(related.firmware_settings)
            host.spec = host.spec.model_copy(update={"firmware_settings": settings})
        if related.update_policy is not None:
            _, _, policy = update_policy_from_manifest(related.update_policy)
            host.spec = host.spec.model_copy(update={"update_policy": policy})
        if related.firmware_components is not None:
            _, _, updates = firmware_updates_from_manifest(related.firmware_components)
            host.spec = host.spec.model_copy(update={"firmware_updates": updates})
        operations.check_spec(host.spec)
    except HostNeedsBMC:
        raise
    except (ManifestError, ValueError) as err:
        return None, str(err)
    return host, ""


def _start_options(meta: dict[str, Any], annotations: dict[str, str]) -> operations.StartOptions:
    """Tagged with the object's uid (to see a recreation), paused/detached as annotated."""
    return operations.StartOptions(
        memo={"uid": meta.get("uid", "")}, paused=PAUSED in annotations, detached=DETACHED in annotations
    )


async def reconcile(
    obj: dict[str, Any], client: Client, settings: Settings, related: Related | None = None
) -> Plan:
    """Decide and perform the workflow side; return the Kubernetes-side patches to make.
    `related`: the host's HostFirmwareSettings and HostUpdatePolicy, where it has them."""
    try:
        return await _reconcile(obj, client, settings, related)
    except HostNeedsBMC as waiting:
        # metal3 accepts a BareMetalHost without spec.bmc and shows it unmanaged/discovered;
        # nothing starts until spec.bmc is set (a deleted one has nothing to deprovision).
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return Plan(remove_finalizer=FINALIZER in (meta.get("finalizers") or []))
        return Plan(
            add_finalizer=FINALIZER not in (meta.get("finalizers") or []), waiting_for_bmc=str(waiting)
        )


async def _reconcile(
    obj: dict[str, Any], client: Client, settings: Settings, related: Related | None
) -> Plan:
    meta = obj.get("metadata") or {}
    ref = HostRef(namespace=meta.get("namespace") or "default", name=meta["name"])
    annotations: dict[str, str] = meta.get("annotations") or {}
    finalizers: list[str] = meta.get("finalizers") or []
    plan = Plan()
    deleting = bool(meta.get("deletionTimestamp"))
    if not deleting and FINALIZER not in finalizers:
        # First sight of the object (no finalizer of ours yet): one start call is the common
        # case; only when a workflow already runs does the full comparison below follow.
        host, error = _parse(obj, related)
        if host is None:
            return Plan(add_finalizer=True, status_error=error)
        if await operations.start(client, host, settings, _start_options(meta, annotations)):
            return Plan(add_finalizer=True, apply=True)
    status, uid = await _workflow_state(client, ref)
    running = status == WorkflowExecutionStatus.RUNNING

    if deleting:
        if FINALIZER not in finalizers:
            return plan
        if running:
            plan.signals.append("delete")
            await operations.signal(client, ref, "delete")
        else:
            plan.remove_finalizer = True  # the workflow finished deprovisioning (or never ran)
        return plan

    if FINALIZER not in finalizers:
        plan.add_finalizer = True
    host, error = _parse(obj, related)
    if host is None:
        plan.status_error = error
        return plan

    if running and uid and uid != meta.get("uid"):
        # The object was deleted and created again while the old incarnation still runs.
        await operations.signal(client, ref, "delete")
        plan.signals.append("delete")
        return plan

    if not running:
        await operations.apply(client, host, settings, _start_options(meta, annotations))
        plan.apply = True
        return plan
    spec, current = await asyncio.gather(operations.spec(client, ref), operations.status(client, ref))
    if spec != host.spec:
        await operations.apply(client, host, settings)
        plan.apply = True

    if (PAUSED in annotations) != current.paused:
        plan.signals.append("pause" if PAUSED in annotations else "resume")
    if (DETACHED in annotations) != current.detached:
        plan.signals.append("detach" if DETACHED in annotations else "attach")
    for name in plan.signals:
        await operations.signal(client, ref, name)
    if any(k == REBOOT_PREFIX or k.startswith(REBOOT_PREFIX + "/") for k in annotations):
        await operations.signal(client, ref, "reboot")
        plan.signals.append("reboot")
        plan.remove_annotations += [
            k for k in annotations if k == REBOOT_PREFIX or k.startswith(REBOOT_PREFIX + "/")
        ]
    if INSPECT in annotations and annotations[INSPECT] != "disabled":
        await operations.signal(client, ref, "inspect")
        plan.signals.append("inspect")
        plan.remove_annotations.append(INSPECT)
    return plan
