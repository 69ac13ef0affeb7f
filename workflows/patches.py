"""Patches, and the baseline that stands for all of them in new histories.

Each `workflow.patched(id)` that a new workflow takes records a marker event and, in the SDK's
core, an upsert of the `TemporalChangeVersion` search attribute: a visibility write in a task
that would otherwise have none. With two dozen patches a host lifecycle paid for about nine
such tasks (issue 28: `bench.engine_floor`, `bench.history_counts`). A workflow started now
needs none of them: it takes every patch. So a new workflow records one patch, `BASELINE`, and
every patch in `IN_BASELINE` then holds without a marker of its own; a history from before the
baseline has no `BASELINE` marker and replays each patch as it was recorded. Children and the
next run after continue-as-new are told through their input (`baseline=True`), so they record
nothing at all. A patch added later is not in `IN_BASELINE` and records its marker as usual.
"""

from __future__ import annotations

from temporalio import workflow

from metalflow.api.states import Stage

BASELINE = "baseline-2026-12-06"

# Every patch made before BASELINE (frozen: a later patch never joins it; see the module's note).
IN_BASELINE: frozenset[str] = frozenset(
    {
        "agent-reply-proof",
        "boot-device-with-power",
        "campaign-drift-report",
        "campaign-node-gate",
        "campaign-phase-search-attribute",
        "configdrive-per-attempt",
        "custom-deploy",
        "deploy-oci-images",
        "disable-power-off",
        "forget-uuid-claim",
        "inspection-mode",
        "learnt-boot-mac",
        "network-data-mac-precheck",
        "power-check-at-rest",
        "power-read-local-activity",
        "power-watch-what-the-host-knows",
        "provisioning-limit",
        "raid-before-cleaning",
        "retry-during-error-publish",
        "root-device-hints-precheck",
        "software-raid-agent",
        "status-lean",
        "status-publish-in-background",
        "uefi-http-boot-target",
        "vmedia-eject-after-deprovision",
        "wake-on-change-during-give-back",
    }
)

_ATTR = "_metalflow_baseline"


def baseline(known: bool = False) -> bool:
    """Whether this workflow run takes the baseline, decided once per run: KNOWN (its input
    says so: a child or the next run of a baseline workflow) or its own `BASELINE` patch.
    A workflow calls it first thing in `run`, so that its one marker is its first command."""
    instance = workflow.instance()
    taken: bool | None = getattr(instance, _ATTR, None)
    if taken is None:
        taken = known or workflow.patched(BASELINE)
        setattr(instance, _ATTR, taken)
    return taken


def patched(patch_id: str) -> bool:
    """`workflow.patched`, without a marker where the baseline already holds the patch."""
    if patch_id in IN_BASELINE and baseline():
        return True
    return workflow.patched(patch_id)


def stage_allowed(stage: Stage) -> bool:
    """A stage moved by a patch runs at its new place in new histories, at its old in old ones."""
    if stage.patch:
        return patched(stage.patch)
    return not (stage.unpatched and patched(stage.unpatched))
