"""Campaign activities: which hosts a selector picks, a host's spec given the change, and the
wait until the host is back and healthy. They talk to the host workflows (visibility, queries,
the `update_spec` update), so the campaign workflow stays deterministic and each host stays the
only owner of its spec and the only caller of its BMC.
"""

from __future__ import annotations

import asyncio
import time

from temporalio import activity

from activities import kube, kube_firmware
from activities.pool import look, running_hosts
from metalflow.api.campaign import (
    CAMPAIGN_APPLY,
    CAMPAIGN_DRIFT,
    CAMPAIGN_TARGETS,
    CAMPAIGN_WAIT,
    CampaignChange,
    CampaignDrift,
    CampaignSelect,
    CampaignTarget,
    DriftRequest,
    HostChange,
    HostOutcome,
)
from metalflow.api.firmware_changes import settings_changed, updates_changed
from metalflow.api.models import (
    HostSpec,
    HostStatus,
    HostUpdatePolicy,
    ProvisioningState,
    UpdatePolicyMode,
)

POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 2.0  # wait_healthy's; its heartbeat timeout (workflows/campaign.py) is 20 s


@activity.defn(name=CAMPAIGN_TARGETS)
async def targets(req: CampaignSelect) -> list[CampaignTarget]:
    """The running hosts of the namespace whose labels hold every matchLabels pair, by name."""
    client = activity.client()
    out = []
    for ref, spec, status in await running_hosts(client, req.namespace):
        if any(spec.labels.get(k) != v for k, v in req.selector.match_labels.items()):
            continue
        managed = bool(await kube.managed_uid(client, ref))
        out.append(
            CampaignTarget(
                ref=ref,
                spec=spec,
                state=status.provisioning.state.value,
                managed_by_kubernetes=managed,
                node=status.node,
            )
        )
    return sorted(out, key=lambda t: t.ref.name)


def changed_spec(spec: HostSpec, change: CampaignChange) -> HostSpec:
    """SPEC with the campaign's settings merged in, its updates, and onReboot for what it changes."""
    policy = spec.update_policy or HostUpdatePolicy()
    if change.firmware_settings:
        policy = policy.model_copy(update={"firmware_settings": UpdatePolicyMode.ON_REBOOT})
    if change.firmware_updates:
        policy = policy.model_copy(update={"firmware_updates": UpdatePolicyMode.ON_REBOOT})
    return spec.model_copy(
        update={
            "firmware_settings": {**spec.firmware_settings, **change.firmware_settings},
            "firmware_updates": change.firmware_updates or spec.firmware_updates,
            "update_policy": policy,
        }
    )


@activity.defn(name=CAMPAIGN_APPLY)
async def apply_change(req: HostChange) -> None:
    """Give the host the change (idempotent: an unchanged spec is not sent again). A host a
    BareMetalHost manages gets it in its HostFirmwareSettings / HostFirmwareComponents /
    HostUpdatePolicy, and this waits until the bridge has carried it to the host's workflow: the
    reboot that follows must find it there."""
    client = activity.client()
    spec, _ = await look(client, req.host)
    if changed_spec(spec, req.change) == spec:
        return
    activity.logger.info("%s: %s gives it %s", req.host.host_id, req.campaign, req.change)
    uid = await kube.managed_uid(client, req.host)
    if not uid:
        await client.get_workflow_handle(req.host.workflow_id).execute_update(
            "update_spec", changed_spec(spec, req.change)
        )
        return
    await asyncio.to_thread(kube_firmware.put_change, req.host, uid, req.change)
    while changed_spec(spec, req.change) != spec:
        activity.heartbeat("waiting for the bridge")
        await asyncio.sleep(POLL_SECONDS)  # the bridge's reconcile, in another process
        spec, _ = await look(client, req.host)


@activity.defn(name=CAMPAIGN_WAIT)
async def wait_healthy(req: HostChange) -> HostOutcome:
    """Until the host is provisioned and powered on with the change applied (ok), or its
    servicing failed (the host's error); the activity's timeout is the campaign's health gate.
    Heartbeats come from a task of their own, every HEARTBEAT_SECONDS however slow a query is
    under load, so a worker lost mid-wait is noticed after a short heartbeat timeout."""
    client = activity.client()
    started = time.monotonic()
    state = ["waiting"]
    beating = asyncio.create_task(_heartbeats(state))
    try:
        while True:
            spec, status = await look(client, req.host)
            if status.error_type is not None:
                return HostOutcome(ok=False, message=f"{status.error_type.value}: {status.error_message}")
            applied = not settings_changed(spec, status) and not updates_changed(spec, status)
            if status.provisioning.state == ProvisioningState.PROVISIONED and status.powered_on and applied:
                return HostOutcome(ok=True, message=f"serviced in {time.monotonic() - started:.0f}s")
            state[0] = status.provisioning.state.value
            await asyncio.sleep(POLL_SECONDS)  # the host's own progress; no event to wait on from here
    finally:
        beating.cancel()


async def _heartbeats(state: list[str]) -> None:
    while True:
        activity.heartbeat(state[0])
        await asyncio.sleep(HEARTBEAT_SECONDS)


def differences(spec_change: CampaignChange, status: HostStatus) -> list[str]:
    """How the host's reported firmware differs from the change (empty: it has it)."""
    reported = status.firmware_settings.settings if status.firmware_settings else {}
    out = [
        f"{name} is {reported.get(name, 'unreported')!r}, the campaign wants {want!r}"
        for name, want in spec_change.firmware_settings.items()
        if reported.get(name, "").lower() != want.lower()
    ]
    applied = status.firmware_components.updates if status.firmware_components else []
    out += [
        f"{u.component} update {u.url} not applied" for u in spec_change.firmware_updates if u not in applied
    ]
    return out


@activity.defn(name=CAMPAIGN_DRIFT)
async def drift(req: DriftRequest) -> list[CampaignDrift]:
    """The hosts whose reported settings or applied updates differ from the change."""
    client = activity.client()
    out = []
    for ref in req.hosts:
        _, status = await look(client, ref)
        found = differences(req.change, status)
        if found:
            out.append(CampaignDrift(ref=ref, differences=found))
    return out


ACTIVITIES = [targets, apply_change, wait_healthy, drift]
