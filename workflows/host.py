"""HostWorkflow: one long-lived workflow per host (id `host/<namespace>/<name>`).

It owns the host's lifecycle state and moves it only through `states.TRANSITIONS`. Working
states run their step as a child workflow; stable states wait for the operator (spec
Update, Signals). Status is a Query, is mirrored to search attributes and memo for the UI,
and is published through the status activity (BareMetalHost.status).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError

from metalflow.api.bmc import PowerAction
from metalflow.api.fleet import SLOT_GRANTED_SIGNAL, SLOT_QUEUED_SIGNAL
from metalflow.api.host import (
    HOST_WORKFLOW,
    JOIN_CLUSTER,
    REGISTER_HOST,
    HostWorkflowInput,
    StepInput,
    StepResult,
)
from metalflow.api.models import (
    CleaningMode,
    CredentialsStatus,
    ErrorType,
    HostSpec,
    HostStatus,
    OperationalStatus,
    OperationMetric,
    SecretRef,
)
from metalflow.api.models import ProvisioningState as S
from metalflow.api.states import STABLE, STEPS, Event, Step, allowed, next_state
from workflows import bmc_calls
from workflows.host_errors import backoff, clear_error, record_error
from workflows.host_publish import publish
from workflows.host_slot import ProvisioningSlot

with workflow.unsafe.imports_passed_through():
    from metalflow.api.validation import validate_update

# Power changes at rest are not a lifecycle step, but fail like one.
POWER_AT_REST = Step("power", Event.POWERED_OFF, ErrorType.POWER_MANAGEMENT, "power at rest")

# Histories recorded before resting hosts read their power wait without a timer.
POWER_CHECK_PATCH = "power-check-at-rest"


class Request:
    """Operator requests that wait for a state that can take them."""

    INSPECT = "inspect"
    REBOOT = "reboot"
    DELETE = "delete"


@workflow.defn(name=HOST_WORKFLOW)
class HostWorkflow:
    @workflow.init
    def __init__(self, inp: HostWorkflowInput) -> None:
        self._ref = inp.ref
        self._spec = inp.spec
        self._status = inp.status or HostStatus()
        self._pending: list[str] = list(inp.pending)
        self._seq = inp.step_seq
        self._paused = inp.paused
        self._detached = inp.detached
        self._status.paused, self._status.detached = inp.paused, inp.detached
        self._ramdisk_timeout = inp.ramdisk_boot_timeout_seconds
        self._history_limit = inp.history_event_limit
        self._power_check = inp.power_check_interval_seconds
        self._registered_bmc = (
            self._spec.bmc if self._status.good_credentials.credentials is not None else None
        )
        self._changes = 0  # bumped by every handler: wakes whatever the loop waits on
        self._retry_now = False
        self._slot = ProvisioningSlot(self._ref)

    # ---- operator interface ----

    @workflow.query
    def status(self) -> HostStatus:
        return self._status

    @workflow.query
    def spec(self) -> HostSpec:
        """The spec being acted on (secret references only, never values)."""
        return self._spec

    @workflow.update
    async def update_spec(self, spec: HostSpec) -> HostStatus:
        self._spec = spec
        self._poke()
        return self._status

    @update_spec.validator
    def _validate_spec(self, spec: HostSpec) -> None:
        validate_update(spec, self._status.provisioning.state, Request.DELETE in self._pending)

    @workflow.signal
    def pause(self) -> None:
        self._paused = True
        self._status.paused = True
        self._poke()

    @workflow.signal
    def resume(self) -> None:
        self._paused = False
        self._status.paused = False
        self._poke()

    @workflow.signal
    def detach(self) -> None:
        self._detached = True
        self._status.detached = True
        self._poke()

    @workflow.signal
    def attach(self) -> None:
        self._detached = False
        self._status.detached = False
        self._poke()

    @workflow.signal
    def retry(self) -> None:
        """Reset the error back-off and try the failed step again now."""
        self._retry_now = True
        self._poke()

    @workflow.signal(name=SLOT_GRANTED_SIGNAL)
    def slot_granted(self) -> None:
        """The namespace's ProvisioningLimiter gave this host the slot it asked for."""
        self._slot.granted = True

    @workflow.signal(name=SLOT_QUEUED_SIGNAL)
    def slot_queued(self) -> None:
        """No slot free: this host waits in the limiter's line (operationalStatus delayed)."""
        self._slot.queued = True

    @workflow.signal
    def inspect(self) -> None:
        self._request(Request.INSPECT)

    @workflow.signal
    def reboot(self) -> None:
        self._request(Request.REBOOT)

    @workflow.signal
    def delete(self) -> None:
        self._request(Request.DELETE)

    def _request(self, request: str) -> None:
        if request not in self._pending:
            self._pending.append(request)
        self._poke()

    def _poke(self) -> None:
        self._changes += 1

    # ---- the loop ----

    @workflow.run
    async def run(self, inp: HostWorkflowInput) -> HostStatus:
        if self._status.provisioning.state == S.NONE:
            self._fire(Event.MANAGE)
        await self._publish()
        while True:
            await self._hold_while_paused()
            state = self._status.provisioning.state
            if state == S.DELETING:
                return await self._finish_delete()
            step = STEPS.get(state)
            if step is not None:
                if not await self._run_step(state, step):
                    await self._wait_after_error()
                continue
            if await self._act_on_spec():
                continue
            await self._slot.give_back()
            if self._history_too_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._carry_over(), memo=dict(workflow.memo()))
            await self._wait_for_change()

    async def _wait_for_change(self) -> None:
        """Wait for the operator; a resting host also reads its power now and then."""
        seen = self._changes
        resting = self._status.provisioning.state in STABLE and self._power_check > 0
        if not (resting and workflow.patched(POWER_CHECK_PATCH)):
            await workflow.wait_condition(lambda: self._changes != seen)
            return
        try:
            await workflow.wait_condition(
                lambda: self._changes != seen, timeout=timedelta(seconds=self._power_check)
            )
        except TimeoutError:
            await self._check_power()

    async def _check_power(self) -> None:
        """Ironic's power sync: a host switched off (or on) behind metalflow's back is seen, and
        the loop brings it back to spec.online; a BMC that stops answering at rest is a power
        management error, cleared when it answers again."""
        try:
            on = await bmc_calls.read_power(self._spec)
        except ActivityError as err:
            self._record_error(POWER_AT_REST, err)
            await self._publish()
            await self._wait_after_error()
            return
        changed = on != self._status.powered_on
        if changed:
            workflow.logger.info("host %s: found powered %s", self._ref.host_id, "on" if on else "off")
        self._status.powered_on = on
        if self._status.error_type == ErrorType.POWER_MANAGEMENT:
            clear_error(self._status)
            changed = True
        if changed:
            await self._publish()

    async def _hold_while_paused(self) -> None:
        if not (self._paused or self._detached):
            return
        await self._slot.give_back()
        previous = self._status.operational_status
        if self._detached:
            self._status.operational_status = OperationalStatus.DETACHED
        await self._publish()
        await workflow.wait_condition(lambda: not (self._paused or self._detached))
        if self._status.operational_status == OperationalStatus.DETACHED:
            self._status.operational_status = (
                previous if previous != OperationalStatus.DETACHED else OperationalStatus.OK
            )
        await self._publish()

    async def _act_on_spec(self) -> bool:
        """In a stable state, turn what the spec and requests ask for into one action."""
        state = self._status.provisioning.state
        if Request.DELETE in self._pending:
            cleaning = self._spec.automated_cleaning_mode != CleaningMode.DISABLED
            if state == S.PROVISIONED and cleaning:
                return await self._transition(Event.DEPROVISION)
            return await self._transition(Event.DELETE)
        if self._registered_bmc != self._spec.bmc:
            await self._run_step_inline(REGISTER_HOST, "re-validate changed BMC details")
            return True
        provisioned = self._status.provisioning.image
        if state == S.PROVISIONED and provisioned != self._spec.image:
            return await self._transition(Event.DEPROVISION)
        if state == S.AVAILABLE:
            if Request.INSPECT in self._pending:
                self._pending.remove(Request.INSPECT)
                return await self._transition(Event.INSPECT)
            if self._spec.image is not None:
                return await self._transition(Event.PROVISION)
        if state in STABLE and Request.REBOOT in self._pending:
            self._pending.remove(Request.REBOOT)
            await self._power(PowerAction.REBOOT)
            return True
        if state in STABLE and self._spec.online != self._status.powered_on:
            await self._power(PowerAction.ON if self._spec.online else PowerAction.SOFT_OFF)
            return True
        return False

    async def _power(self, action: PowerAction) -> None:
        """Power at rest; a BMC that fails here is metal3's "power management error"."""
        try:
            self._status.powered_on = await bmc_calls.power(self._spec, action)
            clear_error(self._status)
        except ActivityError as err:
            self._record_error(POWER_AT_REST, err)
            await self._publish()
            await self._wait_after_error()
            return
        await self._publish()

    async def _transition(self, event: Event) -> bool:
        self._fire(event)
        await self._publish()
        return True

    def _fire(self, event: Event) -> None:
        state = self._status.provisioning.state
        self._status.provisioning.state = next_state(state, event)
        self._status.current_step = ""
        workflow.logger.info(
            "host %s: %s --%s--> %s",
            self._ref.host_id,
            state.value or "none",
            event.value,
            self._status.provisioning.state.value,
        )

    # ---- steps ----

    async def _run_step(self, state: S, step: Step) -> bool:
        try:
            await self._slot.take(state, self._status, self._publish)
        except ActivityError as err:
            self._record_error(step, err)
            await self._publish()
            return False
        history = self._history_slot(state)
        now = workflow.now()
        if history is not None and (history.start is None or history.end is not None):
            history.start, history.end = now, None
        self._status.current_step = step.workflow
        await self._publish()
        try:
            result = await self._child(step.workflow, step.summary, state)
            self._apply(state, result)
            if state == S.PROVISIONING and self._spec.join is not None:
                self._status.current_step = JOIN_CLUSTER
                await self._publish()
                await self._child(JOIN_CLUSTER, "kubeadm join the cluster", state, result.join_token)
        except ChildWorkflowError as err:
            self._record_error(step, err)
            await self._publish()
            return False
        if history is not None:
            history.end = workflow.now()
        clear_error(self._status)
        done = step.done
        if state == S.REGISTERING and self._spec.externally_provisioned:
            done = Event.ADOPT
        if state == S.DEPROVISIONING and Request.DELETE in self._pending and allowed(state, Event.DELETE):
            done = Event.DELETE
        if state == S.POWERING_OFF_BEFORE_DELETE:
            self._pending = [r for r in self._pending if r != Request.DELETE]
        self._fire(done)
        await self._publish()
        return True

    async def _run_step_inline(self, workflow_name: str, summary: str) -> None:
        """A step that leaves the lifecycle state alone (re-registration after a BMC change)."""
        state = self._status.provisioning.state
        self._status.current_step = workflow_name
        try:
            self._apply(S.REGISTERING, await self._child(workflow_name, summary, state))
            clear_error(self._status)
        except ChildWorkflowError as err:
            self._record_error(STEPS[S.REGISTERING], err)
            self._registered_bmc = self._spec.bmc  # do not loop; the next spec change retries
        self._status.current_step = ""
        await self._publish()

    async def _child(
        self, name: str, summary: str, state: S, join_token: SecretRef | None = None
    ) -> StepResult:
        self._seq += 1
        return await workflow.execute_child_workflow(
            name,
            StepInput(
                ref=self._ref,
                spec=self._spec,
                hardware=self._status.hardware,
                powered_on=self._status.powered_on,
                ramdisk_boot_timeout_seconds=self._ramdisk_timeout,
                purpose="deprovision" if state == S.DEPROVISIONING else state.value,
                join_token=join_token,
            ),
            id=f"{workflow.info().workflow_id}/{self._seq:04d}-{name}",
            result_type=StepResult,
            static_summary=f"{name}: {summary}",
        )

    def _apply(self, state: S, result: StepResult) -> None:
        self._status.powered_on = result.powered_on
        if state == S.REGISTERING:
            creds = CredentialsStatus(
                credentials=self._spec.bmc.credentials,
                credentials_version=result.credentials_version,
            )
            self._status.good_credentials = creds
            self._status.tried_credentials = creds
            self._registered_bmc = self._spec.bmc
        elif state == S.INSPECTING and result.hardware is not None:
            self._status.hardware = result.hardware
        elif state == S.PROVISIONING:
            self._status.provisioning.image = result.image
            self._status.provisioning.root_device_hints = self._spec.root_device_hints
            self._status.provisioning.boot_mode = self._spec.boot_mode
        elif state == S.DEPROVISIONING:
            self._status.provisioning.image = None
            self._status.provisioning.root_device_hints = None

    def _history_slot(self, state: S) -> OperationMetric | None:
        h = self._status.operation_history
        return {
            S.REGISTERING: h.register_,
            S.INSPECTING: h.inspect,
            S.PROVISIONING: h.provision,
            S.DEPROVISIONING: h.deprovision,
        }.get(state)

    # ---- errors ----

    def _record_error(self, step: Step, err: ChildWorkflowError | ActivityError) -> None:
        record_error(self._status, step.error_type, err, self._ref.host_id, step.workflow)

    async def _wait_after_error(self) -> None:
        """Back off (metal3 does too), but wake at once for a retry, a new spec, or a delete."""
        await self._slot.give_back()
        spec_at_failure = self._spec
        self._retry_now = False
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._retry_now or self._spec != spec_at_failure or Request.DELETE in self._pending,
                timeout=backoff(self._status.error_count),
            )
        self._retry_now = False
        if Request.DELETE in self._pending and allowed(self._status.provisioning.state, Event.DELETE):
            self._fire(Event.DELETE)
            await self._publish()

    # ---- delete, status, continue-as-new ----

    async def _finish_delete(self) -> HostStatus:
        await self._slot.give_back()
        self._status.deleted = True
        self._status.current_step = ""
        await self._publish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status

    async def _publish(self) -> None:
        await publish(self._ref, self._spec, self._status, self._paused, self._detached)

    def _history_too_long(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > self._history_limit

    def _carry_over(self) -> HostWorkflowInput:
        return HostWorkflowInput(
            ref=self._ref,
            spec=self._spec,
            status=self._status,
            pending=self._pending,
            step_seq=self._seq,
            paused=self._paused,
            detached=self._detached,
            ramdisk_boot_timeout_seconds=self._ramdisk_timeout,
            history_event_limit=self._history_limit,
            power_check_interval_seconds=self._power_check,
        )
