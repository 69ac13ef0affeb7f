"""The lifecycle table: every state reachable, every working state has a step, no dead ends; the
rules a resting host follows, the guards on step completion, and the table's own consistency."""

from __future__ import annotations

from typing import Any

import pytest

from metalflow.api.bmc import PowerAction
from metalflow.api.models import (
    BMCDetails,
    CleaningMode,
    ErrorType,
    HostSpec,
    HostStatus,
    ImageSpec,
    JoinedNode,
    JoinSpec,
    SecretRef,
)
from metalflow.api.models import ProvisioningState as S
from metalflow.api.states import (
    AFTER_ERROR,
    COMPLETIONS,
    FINAL,
    ON_START,
    POWER_SYNC,
    REST_RULES,
    STABLE,
    STEPS,
    TRANSITIONS,
    Action,
    Event,
    Facts,
    Fire,
    IllegalTransition,
    Power,
    Redo,
    Request,
    allowed,
    completion_event,
    first_rule,
    next_state,
    purpose,
    step_workflows,
    wakes_backoff,
)
from workflows import all_workflows


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


# ---- rules, guards and consistency ----

IMAGE = ImageSpec(url="http://images/os.raw", checksum="0" * 64)
BMC = BMCDetails(address="redfish://10.0.0.1/redfish/v1/Systems/1", credentials=SecretRef(name="bmc"))


def facts(
    state: S,
    pending: tuple[Request, ...] = (),
    on_disk: ImageSpec | None = None,
    powered_on: bool = True,
    registered: BMCDetails | None = BMC,
    **spec: Any,
) -> Facts:
    """A host in `state` whose spec asks for IMAGE, online, already registered with BMC."""
    status = HostStatus(powered_on=powered_on)
    status.provisioning.state = state
    status.provisioning.image = on_disk if on_disk is not None or state != S.PROVISIONED else IMAGE
    host_spec = HostSpec(bmc=BMC, image=IMAGE, online=True).model_copy(update=spec)
    return Facts(host_spec, status, tuple(r.value for r in pending), registered)


OTHER_BMC = BMCDetails(address="ipmi://10.0.0.2", credentials=SecretRef(name="bmc"))
REREGISTER = Redo(S.REGISTERING, "re-validate changed BMC details")
OLD_IMAGE = ImageSpec(url="http://images/old.raw", checksum="1" * 64)


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        # a delete beats everything; a provisioned host is cleaned first unless cleaning is off
        (facts(S.PROVISIONED, (Request.DELETE,), registered=OTHER_BMC), Fire(Event.DEPROVISION)),
        (
            facts(S.PROVISIONED, (Request.DELETE,), automated_cleaning_mode=CleaningMode.DISABLED),
            Fire(Event.DELETE),
        ),
        (facts(S.AVAILABLE, (Request.DELETE, Request.INSPECT)), Fire(Event.DELETE)),
        (facts(S.EXTERNALLY_PROVISIONED, (Request.DELETE,)), Fire(Event.DELETE)),
        # a changed BMC is validated in place before anything else uses it
        (facts(S.AVAILABLE, registered=OTHER_BMC), REREGISTER),
        (facts(S.PROVISIONED, (Request.REBOOT,), registered=None), REREGISTER),
        # the image: changed or cleared on a provisioned host deprovisions; set on an available one provisions
        (facts(S.PROVISIONED, on_disk=OLD_IMAGE), Fire(Event.DEPROVISION)),
        (facts(S.PROVISIONED, image=None), Fire(Event.DEPROVISION)),
        (facts(S.AVAILABLE, (Request.INSPECT,)), Fire(Event.INSPECT)),
        (facts(S.AVAILABLE), Fire(Event.PROVISION)),
        (facts(S.EXTERNALLY_PROVISIONED, (Request.INSPECT,), image=None), None),
        # power: a reboot request, then whatever spec.online asks
        (facts(S.PROVISIONED, (Request.REBOOT,), powered_on=False), Power(PowerAction.REBOOT)),
        (facts(S.PROVISIONED, powered_on=False), Power(PowerAction.ON)),
        (facts(S.AVAILABLE, image=None, online=False), Power(PowerAction.SOFT_OFF)),
        (facts(S.AVAILABLE, image=None, online=False, powered_on=False), None),
        (facts(S.PROVISIONED), None),
    ],
)
def test_rest_rules_pick_the_action(f: Facts, expected: Action | None) -> None:
    rule = first_rule(REST_RULES, f)
    assert (rule.action if rule else None) == expected, rule


def test_requests_taken_at_rest_are_consumed_and_delete_waits_for_the_end() -> None:
    inspect = first_rule(REST_RULES, facts(S.AVAILABLE, (Request.INSPECT,)))
    reboot = first_rule(REST_RULES, facts(S.PROVISIONED, (Request.REBOOT,)))
    delete = first_rule(REST_RULES, facts(S.AVAILABLE, (Request.DELETE,)))
    assert inspect and inspect.consumes == Request.INSPECT
    assert reboot and reboot.consumes == Request.REBOOT
    assert delete and delete.consumes is None  # kept until the host is gone (the update validator sees it)
    assert STEPS[S.POWERING_OFF_BEFORE_DELETE].fulfils == Request.DELETE


@pytest.mark.parametrize(
    ("state", "f", "expected"),
    [
        (S.REGISTERING, facts(S.REGISTERING), Event.REGISTERED),
        (S.REGISTERING, facts(S.REGISTERING, externally_provisioned=True), Event.ADOPT),
        (S.DEPROVISIONING, facts(S.DEPROVISIONING), Event.DEPROVISIONED),
        (S.DEPROVISIONING, facts(S.DEPROVISIONING, (Request.DELETE,)), Event.DELETE),
        (
            S.PROVISIONING,
            facts(S.PROVISIONING, (Request.DELETE,), externally_provisioned=True),
            Event.PROVISIONED,
        ),
        (
            S.POWERING_OFF_BEFORE_DELETE,
            facts(S.POWERING_OFF_BEFORE_DELETE, (Request.DELETE,)),
            Event.POWERED_OFF,
        ),
    ],
)
def test_completion_guards_pick_the_event(state: S, f: Facts, expected: Event) -> None:
    assert completion_event(state, f) == expected


def test_provisioning_joins_the_cluster_only_when_asked() -> None:
    join = JoinSpec(kubeconfig=SecretRef(name="kc"))
    stages = STEPS[S.PROVISIONING].stages
    assert [s.workflow for s in stages if s.when(facts(S.PROVISIONING))] == ["DeployHost"]
    assert [s.workflow for s in stages if s.when(facts(S.PROVISIONING, join=join))] == [
        "DeployHost",
        "JoinCluster",
    ]


def test_after_an_error_a_pending_delete_wins_where_delete_is_allowed() -> None:
    assert wakes_backoff(facts(S.POWERING_OFF_BEFORE_DELETE, (Request.DELETE,)))
    assert not wakes_backoff(facts(S.INSPECTING, (Request.REBOOT,)))
    rule = first_rule(AFTER_ERROR, facts(S.INSPECTING, (Request.DELETE,)))
    assert rule and rule.action == Fire(Event.DELETE)
    assert first_rule(AFTER_ERROR, facts(S.POWERING_OFF_BEFORE_DELETE, (Request.DELETE,))) is None


def test_every_state_is_started_worked_rested_or_final() -> None:
    """The loop has exactly one thing to do in each state of the table."""
    for state in TRANSITIONS:
        roles = [state in ON_START, state in STEPS, state in STABLE, state in FINAL]
        assert roles.count(True) == 1, (state, roles)
    assert POWER_SYNC.states <= STABLE and POWER_SYNC.error_type == ErrorType.POWER_MANAGEMENT


def test_table_is_consistent() -> None:
    """Every event a rule or guard fires is allowed where it fires; rest rules act at rest."""
    for rule in REST_RULES:
        assert rule.states and rule.states <= STABLE, rule.name
    for rule in (*REST_RULES, *AFTER_ERROR):
        match rule.action:
            case Fire(event):
                bad = [s for s in rule.states if not allowed(s, event)]
                assert not bad, f"rule {rule.name!r} fires {event} where it is not allowed: {bad}"
            case Redo(state):
                assert state in STEPS, rule.name
            case Power():
                assert rule.states <= STABLE, rule.name
    for c in COMPLETIONS:
        assert c.state in STEPS and c.done == STEPS[c.state].done, c
        assert allowed(c.state, c.event), c
    assert all(allowed(s, e) for s, e in ON_START.items())


def test_purpose_tells_deprovisioning_from_preparing() -> None:
    assert STEPS[S.DEPROVISIONING].workflow == STEPS[S.PREPARING].workflow
    assert purpose(S.DEPROVISIONING) == "deprovision"
    assert purpose(S.PREPARING) == "preparing" and purpose(S.PROVISIONED) == "provisioned"


def test_every_workflow_the_table_names_is_registered() -> None:
    names = {getattr(w, "__temporal_workflow_definition").name for w in all_workflows()}
    assert step_workflows() <= names
    assert {"RegisterHost", "JoinCluster", "PowerOffHost", "HostWorkflow"} <= names


def test_a_worker_refuses_a_table_naming_an_unknown_workflow(monkeypatch: pytest.MonkeyPatch) -> None:
    import workflows

    monkeypatch.setattr(workflows, "step_workflows", lambda: step_workflows() | {"ConfigureBIOS"})
    with pytest.raises(RuntimeError, match="ConfigureBIOS"):
        all_workflows()


def test_a_joined_host_is_deprovisioned_before_delete_even_with_cleaning_disabled() -> None:
    """Its Node is drained and deleted on the way (CleanHost with status.node); metal3's rule
    (no cleaning: straight to power off) holds for hosts that never joined."""
    plain = facts(S.PROVISIONED, (Request.DELETE,), automated_cleaning_mode=CleaningMode.DISABLED)
    rule = first_rule(REST_RULES, plain)
    assert rule is not None and rule.action == Fire(Event.DELETE)
    joined = facts(S.PROVISIONED, (Request.DELETE,), automated_cleaning_mode=CleaningMode.DISABLED)
    joined.status.node = JoinedNode(
        name="w0", provider_id="metalflow://default/w0", kubeconfig=SecretRef(name="kc")
    )
    rule = first_rule(REST_RULES, joined)
    assert rule is not None and rule.action == Fire(Event.DEPROVISION)


def test_firmware_settings_are_checked_before_cleaning_and_serviced_only_on_a_reboot() -> None:
    """Preparing runs ApplyFirmwareSettings before CleanHost when settings are asked for; a
    provisioned host's changed settings go to `servicing` only with HostUpdatePolicy onReboot and
    a reboot asked for (otherwise a reboot is a reboot, and the change waits for preparing)."""
    from metalflow.api.firmware import FirmwareSettingsStatus
    from metalflow.api.models import HostUpdatePolicy, UpdatePolicyMode

    stages = STEPS[S.PREPARING].stages
    assert [s.workflow for s in stages if s.when(facts(S.PREPARING))] == ["CleanHost"]
    wanted = {"ProcTurboMode": "Disabled"}
    assert [s.workflow for s in stages if s.when(facts(S.PREPARING, firmware_settings=wanted))] == [
        "ApplyFirmwareSettings",
        "CleanHost",
    ]
    policy = HostUpdatePolicy(firmware_settings=UpdatePolicyMode.ON_REBOOT)

    def provisioned(pending: tuple[Request, ...], reported: str, **spec: Any) -> Facts:
        f = facts(S.PROVISIONED, pending, firmware_settings=wanted, **spec)
        f.status.firmware_settings = FirmwareSettingsStatus(settings={"ProcTurboMode": reported})
        return f

    def action(f: Facts) -> Action | None:
        rule = first_rule(REST_RULES, f)
        return rule.action if rule else None

    assert action(provisioned((Request.REBOOT,), "Enabled", update_policy=policy)) == Fire(Event.SERVICE)
    assert action(provisioned((), "Enabled", update_policy=policy)) is None  # waits for a reboot
    assert action(provisioned((Request.REBOOT,), "Enabled")) == Power(PowerAction.REBOOT)  # no policy
    assert action(provisioned((Request.REBOOT,), "disabled", update_policy=policy)) == Power(
        PowerAction.REBOOT
    )
    on_preparing = HostUpdatePolicy(firmware_settings=UpdatePolicyMode.ON_PREPARING)
    assert action(provisioned((Request.REBOOT,), "Enabled", update_policy=on_preparing)) == Power(
        PowerAction.REBOOT
    )
    servicing = STEPS[S.SERVICING]
    assert servicing.workflow == "ApplyFirmwareSettings" and servicing.fulfils == Request.REBOOT
    assert servicing.error_type == ErrorType.SERVICING
    assert TRANSITIONS[S.SERVICING][Event.SERVICED] == S.PROVISIONED


def test_firmware_updates_run_first_while_preparing_and_by_servicing_with_their_policy() -> None:
    from metalflow.api.firmware_components import FirmwareComponentsStatus, FirmwareUpdate
    from metalflow.api.models import HostUpdatePolicy, UpdatePolicyMode

    updates = [FirmwareUpdate(component="bios", url="http://images/bios-2.bin")]
    stages = STEPS[S.PREPARING].stages
    wanted = {"ProcTurboMode": "Disabled"}
    assert [
        s.workflow
        for s in stages
        if s.when(facts(S.PREPARING, firmware_updates=updates, firmware_settings=wanted))
    ] == [
        "ApplyFirmwareUpdates",
        "ApplyFirmwareSettings",
        "CleanHost",
    ]
    policy = HostUpdatePolicy(firmware_updates=UpdatePolicyMode.ON_REBOOT)
    f = facts(S.PROVISIONED, (Request.REBOOT,), firmware_updates=updates, update_policy=policy)
    rule = first_rule(REST_RULES, f)
    assert rule is not None and rule.action == Fire(Event.SERVICE)
    assert [s.workflow for s in STEPS[S.SERVICING].stages if s.when(f)] == [
        "ApplyFirmwareUpdates",
        "ApplyFirmwareSettings",
    ]
    f.status.firmware_components = FirmwareComponentsStatus(updates=updates)  # already applied
    rule = first_rule(REST_RULES, f)
    assert rule is not None and rule.action == Power(PowerAction.REBOOT)
