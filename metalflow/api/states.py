"""The host lifecycle, declared as data (as Ironic's states.py does): HostWorkflow decides
nothing itself, it walks these tables and executes what they say.

- `TRANSITIONS[state][event]`: the next state.
- `STEPS[state]`: a working state's job: its step workflow, follow-up workflows with guards
  (PROVISIONING runs DeployHost, then JoinCluster when spec.join is set), the event success
  fires, the metal3 errorType failure carries, the request it fulfils.
- `COMPLETIONS`: guards that make a step's success fire another event than its usual one.
- `REST_RULES`: what a spec change or an operator request triggers in a stable state; the
  first rule whose state set and predicate match acts (fire an event, redo a step in place,
  drive power). `AFTER_ERROR` is the same for a host that failed and backed off.
- `POWER_SYNC`: the periodic power read at rest (Ironic's power sync) and its errorType.

Predicates and guards are pure functions of `Facts`: they run in the workflow sandbox and in tests.

Adding a lifecycle step touches three places: (1) a row here, a `Stage` in a state's `Step`
(`before` or `then`, its guard a predicate here) or a new working state's `Step`, `TRANSITIONS`
and ProvisioningState; (2) its `@workflow.defn` class under `workflows/`, `StepInput` in,
`StepResult` out (`workflows.all_workflows()` finds it, and refuses a name here without one);
(3) its activities under `activities/`, their contracts in the API package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from metalflow.api.bmc import PowerAction
from metalflow.api.firmware_changes import settings_changed
from metalflow.api.hardware_guards import (
    firmware_settings_requested,
    firmware_updates_requested,
    raid_requested,
    updates_due,
)
from metalflow.api.host import (
    APPLY_FIRMWARE_SETTINGS,
    APPLY_FIRMWARE_UPDATES,
    CLEAN_HOST,
    CONFIGURE_RAID,
    DEPLOY_HOST,
    INSPECT_HOST,
    JOIN_CLUSTER,
    POWER_OFF_HOST,
    REGISTER_HOST,
)
from metalflow.api.models import BMCDetails, CleaningMode, ErrorType, HostSpec, HostStatus, UpdatePolicyMode
from metalflow.api.models import ProvisioningState as S


class Event(StrEnum):
    MANAGE = "manage"  # a new host: start registering
    REGISTERED = "registered"
    ADOPT = "adopt"  # registered, externally provisioned: take over without touching the disk
    INSPECTED = "inspected"
    PREPARED = "prepared"
    PROVISION = "provision"  # an image is set
    PROVISIONED = "provisioned"
    DEPROVISION = "deprovision"  # the image is cleared, or a reprovision begins
    DEPROVISIONED = "deprovisioned"
    INSPECT = "inspect"  # operator asks for inspection again
    DELETE = "delete"
    SERVICE = "service"  # a provisioned host's firmware changes at the reboot asked for
    SERVICED = "serviced"
    POWERED_OFF = "powered_off"
    DELETED = "deleted"


class Request(StrEnum):
    """Operator requests (signals) that wait in `pending` for a state that can take them."""

    INSPECT = "inspect"
    REBOOT = "reboot"
    DELETE = "delete"


TRANSITIONS: dict[S, dict[Event, S]] = {
    S.NONE: {Event.MANAGE: S.REGISTERING},
    S.REGISTERING: {
        Event.REGISTERED: S.INSPECTING,
        Event.ADOPT: S.EXTERNALLY_PROVISIONED,
        Event.DELETE: S.DELETING,
    },
    S.INSPECTING: {
        Event.INSPECTED: S.PREPARING,
        Event.DELETE: S.DELETING,
    },
    S.PREPARING: {
        Event.PREPARED: S.AVAILABLE,
        Event.DELETE: S.DELETING,
    },
    S.AVAILABLE: {
        Event.PROVISION: S.PROVISIONING,
        Event.INSPECT: S.INSPECTING,
        Event.DELETE: S.DELETING,
    },
    S.PROVISIONING: {
        Event.PROVISIONED: S.PROVISIONED,
        Event.DEPROVISION: S.DEPROVISIONING,
        Event.DELETE: S.POWERING_OFF_BEFORE_DELETE,
    },
    S.PROVISIONED: {
        Event.DEPROVISION: S.DEPROVISIONING,
        Event.SERVICE: S.SERVICING,
        Event.DELETE: S.POWERING_OFF_BEFORE_DELETE,
    },
    S.SERVICING: {
        Event.SERVICED: S.PROVISIONED,
        Event.DELETE: S.POWERING_OFF_BEFORE_DELETE,
    },
    S.EXTERNALLY_PROVISIONED: {
        Event.DEPROVISION: S.DEPROVISIONING,
        Event.DELETE: S.POWERING_OFF_BEFORE_DELETE,
    },
    S.DEPROVISIONING: {
        Event.DEPROVISIONED: S.AVAILABLE,
        Event.DELETE: S.DELETING,
    },
    S.POWERING_OFF_BEFORE_DELETE: {Event.POWERED_OFF: S.DELETING},
    S.DELETING: {Event.DELETED: S.DELETING},
}

# What a run fires when it starts in a state (a new host is managed), and where it ends.
ON_START: dict[S, Event] = {S.NONE: Event.MANAGE}
FINAL: frozenset[S] = frozenset({S.DELETING})


# ---- what rules and guards look at ----


@dataclass(frozen=True)
class Facts:
    """The host as the workflow sees it now: all a predicate may look at."""

    spec: HostSpec
    status: HostStatus
    pending: tuple[str, ...] = ()
    registered_bmc: BMCDetails | None = None  # the BMC details registration last ran with

    @property
    def state(self) -> S:
        return self.status.provisioning.state


Guard = Callable[[Facts], bool]


def always(_: Facts) -> bool:
    return True


def joining(f: Facts) -> bool:
    return f.spec.join is not None


def adopting(f: Facts) -> bool:
    return f.spec.externally_provisioned


def delete_requested(f: Facts) -> bool:
    return Request.DELETE in f.pending


def inspect_requested(f: Facts) -> bool:
    return Request.INSPECT in f.pending


def reboot_requested(f: Facts) -> bool:
    return Request.REBOOT in f.pending


def clean_before_delete(f: Facts) -> bool:
    """A provisioned host asked to go is cleaned first, unless cleaning is disabled (metal3); a
    joined one is deprovisioned all the same, so that its Node is drained and deleted."""
    joined = f.status.node is not None
    return delete_requested(f) and (f.spec.automated_cleaning_mode != CleaningMode.DISABLED or joined)


def bmc_changed(f: Facts) -> bool:
    return f.registered_bmc != f.spec.bmc


def image_changed(f: Facts) -> bool:
    return f.status.provisioning.image != f.spec.image


def image_set(f: Facts) -> bool:
    """Something to deploy: spec.image, or a spec.customDeploy method (metal3 needs either)."""
    return f.spec.image is not None or f.spec.custom_deploy is not None


def servicing_due(f: Facts) -> bool:
    """A reboot is asked for, and changed settings or new updates are due then (`onReboot`)."""
    policy = f.spec.update_policy
    on_reboot = policy is not None and policy.firmware_settings == UpdatePolicyMode.ON_REBOOT
    return reboot_requested(f) and ((on_reboot and settings_changed(f.spec, f.status)) or updates_due(f))


def power_on_wanted(f: Facts) -> bool:
    return f.spec.online and not f.status.powered_on


def power_off_wanted(f: Facts) -> bool:
    return not f.spec.online and f.status.powered_on


# ---- working states ----


@dataclass(frozen=True)
class Stage:
    """A follow-up step workflow of a working state's job, run only when `when` holds."""

    workflow: str
    summary: str
    when: Guard = always
    patch: str = ""  # run only where workflow.patched(patch) holds: histories made since the patch
    unpatched: str = ""  # run only where this patch is absent: histories from before it


RAID_BEFORE_CLEANING = "raid-before-cleaning"  # ConfigureRAID ran after CleanHost until this patch
Metric = Literal["register_", "inspect", "provision", "deprovision"]


@dataclass(frozen=True)
class Step:
    """A working state's job: stages `before` it, its step workflow, then its follow-ups in
    order; the step workflow's result updates the status, the follow-ups get its join token.
    Success fires `done` (unless a `COMPLETIONS` guard says otherwise) and fulfils `fulfils`;
    failure is `error_type`. `purpose` tells the step workflow why it runs (default: the
    state's name); `metric` names the status.operationHistory entry that times it."""

    workflow: str
    done: Event
    error_type: ErrorType
    summary: str
    then: tuple[Stage, ...] = ()
    fulfils: Request | None = None
    purpose: str = ""
    metric: Metric | None = None
    before: tuple[Stage, ...] = ()

    @property
    def stages(self) -> tuple[Stage, ...]:
        return (*self.before, Stage(self.workflow, self.summary), *self.then)


STEPS: dict[S, Step] = {
    S.REGISTERING: Step(
        REGISTER_HOST,
        Event.REGISTERED,
        ErrorType.REGISTRATION,
        "validate BMC credentials, read power",
        metric="register_",
    ),
    S.INSPECTING: Step(
        INSPECT_HOST,
        Event.INSPECTED,
        ErrorType.INSPECTION,
        "boot the ramdisk, collect inventory",
        metric="inspect",
    ),
    S.PREPARING: Step(
        CLEAN_HOST,
        Event.PREPARED,
        ErrorType.PREPARATION,
        "clean disks per automatedCleaningMode",
        # settings are checked against the BMC's registry before cleaning touches a disk; RAID is
        # built before cleaning (as metal3 does), so cleaning sees the volumes the OS will
        before=(
            Stage(APPLY_FIRMWARE_UPDATES, "apply firmware updates", when=firmware_updates_requested),
            Stage(APPLY_FIRMWARE_SETTINGS, "apply firmware settings", when=firmware_settings_requested),
            Stage(CONFIGURE_RAID, "apply spec.raid", when=raid_requested, patch=RAID_BEFORE_CLEANING),
        ),
        then=(Stage(CONFIGURE_RAID, "apply spec.raid", when=raid_requested, unpatched=RAID_BEFORE_CLEANING),),
    ),
    S.PROVISIONING: Step(
        DEPLOY_HOST,
        Event.PROVISIONED,
        ErrorType.PROVISIONING,
        "write the image, boot from disk",
        then=(Stage(JOIN_CLUSTER, "kubeadm join the cluster", when=joining),),
        metric="provision",
    ),
    S.DEPROVISIONING: Step(
        CLEAN_HOST,
        Event.DEPROVISIONED,
        ErrorType.PROVISIONING,
        "clean disks, power off",
        purpose="deprovision",
        metric="deprovision",
    ),
    S.SERVICING: Step(
        APPLY_FIRMWARE_SETTINGS,
        Event.SERVICED,
        ErrorType.SERVICING,
        "apply changed firmware settings at the reboot (onReboot)",
        fulfils=Request.REBOOT,
        purpose="servicing",
        before=(Stage(APPLY_FIRMWARE_UPDATES, "apply new firmware updates", when=updates_due),),
    ),
    S.POWERING_OFF_BEFORE_DELETE: Step(
        POWER_OFF_HOST,
        Event.POWERED_OFF,
        ErrorType.POWER_MANAGEMENT,
        "power off before delete",
        fulfils=Request.DELETE,
    ),
}


def purpose(state: S) -> str:
    """What a step workflow started in `state` is told it runs for."""
    step = STEPS.get(state)
    return step.purpose if step is not None and step.purpose else state.value


@dataclass(frozen=True)
class Completion:
    """When `when` holds as `state`'s step succeeds, it fires `event` instead of `done`."""

    state: S
    done: Event
    when: Guard
    event: Event


COMPLETIONS: tuple[Completion, ...] = (
    # registered, externally provisioned: adopt the running host without touching its disk
    Completion(S.REGISTERING, Event.REGISTERED, adopting, Event.ADOPT),
    # cleaned because a delete was asked for: go on deleting, not back to available
    Completion(S.DEPROVISIONING, Event.DEPROVISIONED, delete_requested, Event.DELETE),
)


def completion_event(state: S, facts: Facts) -> Event:
    """The event `state`'s step fires on success: its `done`, unless a completion guard holds."""
    done = STEPS[state].done
    for c in COMPLETIONS:
        if c.state == state and c.done == done and c.when(facts):
            return c.event
    return done


# ---- at rest ----

# States where a host rests until the operator asks for something.
STABLE: frozenset[S] = frozenset({S.AVAILABLE, S.PROVISIONED, S.EXTERNALLY_PROVISIONED})


@dataclass(frozen=True)
class Fire:
    """Move the host: fire a lifecycle event."""

    event: Event


@dataclass(frozen=True)
class Redo:
    """Run `state`'s step workflow again in place; the host stays where it rests. A failed redo
    is not repeated until its trigger changes again."""

    state: S
    summary: str


@dataclass(frozen=True)
class Power:
    """Drive power at rest; a BMC failing here is `error_type`."""

    action: PowerAction
    error_type: ErrorType = ErrorType.POWER_MANAGEMENT


Action = Fire | Redo | Power


@dataclass(frozen=True)
class Rule:
    """In one of `states`, when `when` holds: take `action`, consuming the request `consumes`."""

    name: str
    states: frozenset[S]
    when: Guard
    action: Action
    consumes: Request | None = None


_PROVISIONED = frozenset({S.PROVISIONED})
_AVAILABLE = frozenset({S.AVAILABLE})

# Ordered: a delete beats everything, a BMC change is validated before it is used, the image
# before requests, power last (it is what spec.online asks once all else is done).
REST_RULES: tuple[Rule, ...] = (
    Rule("clean, then delete", _PROVISIONED, clean_before_delete, Fire(Event.DEPROVISION)),
    Rule("delete", STABLE, delete_requested, Fire(Event.DELETE)),
    Rule("re-register", STABLE, bmc_changed, Redo(S.REGISTERING, "re-validate changed BMC details")),
    Rule("reprovision or deprovision", _PROVISIONED, image_changed, Fire(Event.DEPROVISION)),
    Rule("inspect again", _AVAILABLE, inspect_requested, Fire(Event.INSPECT), consumes=Request.INSPECT),
    Rule("provision", _AVAILABLE, image_set, Fire(Event.PROVISION)),
    Rule("service at the reboot", _PROVISIONED, servicing_due, Fire(Event.SERVICE)),
    Rule("reboot", STABLE, reboot_requested, Power(PowerAction.REBOOT), consumes=Request.REBOOT),
    Rule("power on", STABLE, power_on_wanted, Power(PowerAction.ON)),
    Rule("power off", STABLE, power_off_wanted, Power(PowerAction.SOFT_OFF)),
)

# After a failure has backed off (or been woken early): a pending delete wins over a retry.
AFTER_ERROR: tuple[Rule, ...] = (
    Rule(
        "delete",
        frozenset(s for s, events in TRANSITIONS.items() if Event.DELETE in events),
        delete_requested,
        Fire(Event.DELETE),
    ),
)


def first_rule(rules: tuple[Rule, ...], facts: Facts) -> Rule | None:
    """The rule that acts now: the first whose states include the host's and whose predicate holds."""
    return next((r for r in rules if facts.state in r.states and r.when(facts)), None)


def wakes_backoff(facts: Facts) -> bool:
    """A request an `AFTER_ERROR` rule would take ends the back-off at once, in any state."""
    return any(r.when(facts) for r in AFTER_ERROR)


@dataclass(frozen=True)
class PowerSync:
    """Read power every so often while resting in `states`; a failed read is `error_type`, and
    an answer clears an error of that type."""

    states: frozenset[S]
    error_type: ErrorType


POWER_SYNC = PowerSync(STABLE, ErrorType.POWER_MANAGEMENT)


def step_workflows() -> frozenset[str]:
    """Every step workflow the tables start: a worker must register each of them."""
    names = {stage.workflow for step in STEPS.values() for stage in step.stages}
    names |= {STEPS[r.action.state].workflow for r in REST_RULES if isinstance(r.action, Redo)}
    return frozenset(names)


# ---- the provisioning limit, and what clients wait for ----

# Working states that count against the namespace's provisioning limit (metal3's
# PROVISIONING_LIMIT): the ones that boot the ramdisk and move images. A host holds its slot
# through consecutive limited states and gives it back when it rests, fails or pauses.
LIMITED: frozenset[S] = frozenset({S.INSPECTING, S.PREPARING, S.PROVISIONING, S.DEPROVISIONING})

# Where a host ends up once it has done what its spec asks: with an image it rests provisioned,
# without one available (or adopted as externally provisioned). Clients and the fleet wait on this.
SETTLED_WITH_IMAGE: frozenset[S] = frozenset({S.PROVISIONED})
SETTLED_WITHOUT_IMAGE: frozenset[S] = frozenset({S.AVAILABLE, S.EXTERNALLY_PROVISIONED})


def settled(state: str, want_image: bool, in_error: bool = False) -> bool:
    """A host is done with what was asked of it (or stopped in an error the operator must see).

    `state` is a ProvisioningState or its value (as search attributes carry it)."""
    return in_error or state in (SETTLED_WITH_IMAGE if want_image else SETTLED_WITHOUT_IMAGE)


class IllegalTransition(Exception):
    """An event the table does not allow in the current state; names both so an operator sees why."""

    def __init__(self, state: S, event: Event) -> None:
        allowed = ", ".join(e.value for e in TRANSITIONS.get(state, {})) or "none"
        super().__init__(
            f"cannot {event.value!r} a host in state {state.value or 'none'!r}; allowed here: {allowed}"
        )
        self.state = state
        self.event = event


def next_state(state: S, event: Event) -> S:
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise IllegalTransition(state, event) from None


def allowed(state: S, event: Event) -> bool:
    return event in TRANSITIONS.get(state, {})
