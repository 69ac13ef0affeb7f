"""The host lifecycle, declared as data (as Ironic's states.py does).

`TRANSITIONS[state][event]` is the next state. `STEPS[state]` names the child workflow that
does a working state's job, the event its success fires, and the metal3 errorType its
failure carries. The workflow consults these tables and nothing else decides where a host
goes next; the CRD status mirrors the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from metalflow.api.models import ErrorType
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
    POWERED_OFF = "powered_off"
    DELETED = "deleted"


# Every state a host can be deleted from; powering off first where it may be running a workload.
_DELETE_FROM_RUNNING = {S.PROVISIONED, S.EXTERNALLY_PROVISIONED, S.PROVISIONING}

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


@dataclass(frozen=True)
class Step:
    """A working state's job: which child workflow runs, what its success fires."""

    workflow: str
    done: Event
    error_type: ErrorType
    summary: str


STEPS: dict[S, Step] = {
    S.REGISTERING: Step(
        "RegisterHost",
        Event.REGISTERED,
        ErrorType.REGISTRATION,
        "validate BMC credentials, read power",
    ),
    S.INSPECTING: Step(
        "InspectHost", Event.INSPECTED, ErrorType.INSPECTION, "boot the ramdisk, collect inventory"
    ),
    S.PREPARING: Step(
        "CleanHost", Event.PREPARED, ErrorType.PREPARATION, "clean disks per automatedCleaningMode"
    ),
    S.PROVISIONING: Step(
        "DeployHost", Event.PROVISIONED, ErrorType.PROVISIONING, "write the image, boot from disk"
    ),
    S.DEPROVISIONING: Step(
        "CleanHost", Event.DEPROVISIONED, ErrorType.PROVISIONING, "clean disks, power off"
    ),
    S.POWERING_OFF_BEFORE_DELETE: Step(
        "PowerOffHost", Event.POWERED_OFF, ErrorType.POWER_MANAGEMENT, "power off before delete"
    ),
}

# States where a host rests until the operator asks for something.
STABLE: frozenset[S] = frozenset({S.AVAILABLE, S.PROVISIONED, S.EXTERNALLY_PROVISIONED})

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
