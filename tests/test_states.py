"""The lifecycle table: every state reachable, every working state has a step, no dead ends."""

from __future__ import annotations

import pytest

from metalflow.api.models import ErrorType
from metalflow.api.models import ProvisioningState as S
from metalflow.api.states import STABLE, STEPS, TRANSITIONS, Event, IllegalTransition, allowed, next_state


def test_happy_path_follows_metal3_order() -> None:
    path = [S.NONE]
    for event in (
        Event.MANAGE,
        Event.REGISTERED,
        Event.INSPECTED,
        Event.PREPARED,
        Event.PROVISION,
        Event.PROVISIONED,
        Event.DEPROVISION,
        Event.DEPROVISIONED,
    ):
        path.append(next_state(path[-1], event))
    assert [s.value for s in path] == [
        "",
        "registering",
        "inspecting",
        "preparing",
        "available",
        "provisioning",
        "provisioned",
        "deprovisioning",
        "available",
    ]


def test_every_state_is_reachable_from_none() -> None:
    seen, frontier = {S.NONE}, [S.NONE]
    while frontier:
        for nxt in TRANSITIONS.get(frontier.pop(), {}).values():
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen >= set(TRANSITIONS)
    assert S.EXTERNALLY_PROVISIONED in seen and S.DELETING in seen


def test_each_working_state_has_a_step_and_its_done_event_is_legal() -> None:
    for state, step in STEPS.items():
        assert state not in STABLE
        assert allowed(state, step.done), f"{state} cannot fire its own done event {step.done}"
    assert STEPS[S.REGISTERING].error_type == ErrorType.REGISTRATION
    assert STEPS[S.PROVISIONING].error_type == ErrorType.PROVISIONING


def test_every_state_but_deleting_can_be_deleted_or_finishes_first() -> None:
    for state in TRANSITIONS:
        if state in (S.NONE, S.DELETING, S.POWERING_OFF_BEFORE_DELETE):
            continue
        assert allowed(state, Event.DELETE), state


def test_illegal_event_names_state_and_allowed_events() -> None:
    with pytest.raises(
        IllegalTransition, match=r"cannot 'provision' a host in state 'registering'.*registered"
    ):
        next_state(S.REGISTERING, Event.PROVISION)
