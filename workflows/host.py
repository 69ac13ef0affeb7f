"""HostWorkflow: one long-lived workflow per host (id `host/<namespace>/<name>`).

It decides nothing itself: `metalflow.api.states` is the rule, and this loop executes it.
Working states run their step workflows as children (`STEPS`, `COMPLETIONS`); stable states
act on the first matching `REST_RULES` entry, else wait for the operator (spec Update,
Signals) and read power now and then (`POWER_SYNC`). Status is a Query, mirrored to search
attributes and memo and published as BareMetalHost.status (`host_publish`); the provisioning
limit is `host_slot`, error fields and back-off `host_errors`.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError

from metalflow.api.boot import BOOT_FORGET_UUID, learnt_boot_mac
from metalflow.api.firmware_components import merged_components
from metalflow.api.fleet import SLOT_GRANTED_SIGNAL, SLOT_QUEUED_SIGNAL
from metalflow.api.host import HOST_WORKFLOW, HostWorkflowInput, StepInput, StepResult
from metalflow.api.models import (
    ErrorType,
    HostSpec,
    HostStatus,
    OperationalStatus,
    OperationMetric,
    SecretRef,
)
from metalflow.api.models import ProvisioningState as S
from metalflow.api.power_sync import BATCHED, PER_HOST, POWER_SEEN_SIGNAL, PowerReading
from metalflow.api.security import SECURITY_EVENT_SIGNAL, SECURITY_EVENTS_KEPT, SecurityEvent
from metalflow.api.states import (
    AFTER_ERROR,
    FINAL,
    ON_START,
    POWER_SYNC,
    REST_RULES,
    STEPS,
    Event,
    Facts,
    Fire,
    Power,
    Redo,
    Request,
    Rule,
    Step,
    completion_event,
    first_rule,
    next_state,
    purpose,
    wakes_backoff,
)
from workflows import bmc_calls, patches
from workflows.host_errors import backoff, clear_error, record_error
from workflows.host_power_watch import PowerWatcher, reading_error
from workflows.host_publish import StatusPublisher
from workflows.host_results import apply_result
from workflows.host_slot import ProvisioningSlot
from workflows.options import LOCAL_RETRY, LOCAL_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from metalflow.api.validation import validate_update

# Histories recorded before resting hosts read their power wait without a timer.
POWER_CHECK_PATCH = "power-check-at-rest"
# Hosts enrolled without a MAC: steps after inspection get the MAC that booted (issue 21).
LEARNT_MAC_PATCH = "learnt-boot-mac"
# A spec, signal or request arriving while the host gave its provisioning slot back was missed
# until the next power check (300 s): the change counter is now read before that await.
WAKE_PATCH = "wake-on-change-during-give-back"
FORGET_UUID_PATCH = "forget-uuid-claim"  # ...and a deleted one frees its SMBIOS UUID
RETRY_PATCH = "retry-during-error-publish"  # a retry sent while the error was published was lost


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
        self._watch = PowerWatcher(inp.ref, inp.power_sync == BATCHED, inp.power_seq)
        self._registered_bmc = (
            self._spec.bmc if self._status.good_credentials.credentials is not None else None
        )
        self._changes = 0  # bumped by every handler: wakes whatever the loop waits on
        self._retry_now = False
        self._slot = ProvisioningSlot(self._ref)
        self._publisher = StatusPublisher(self._ref)

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

    @workflow.signal(name=SECURITY_EVENT_SIGNAL)
    def security_event(self, event: SecurityEvent) -> None:
        """A step refused an agent reply (workflows/inband.py): kept in status, newest last."""
        self._status.security_events = [*self._status.security_events, event][-SECURITY_EVENTS_KEPT:]
        self._poke()

    @workflow.signal(name=POWER_SEEN_SIGNAL)
    def power_seen(self, reading: PowerReading) -> None:
        self._watch.seen(reading)
        self._poke()

    @workflow.signal
    def inspect(self) -> None:
        self._request(Request.INSPECT)

    @workflow.signal
    def reboot(self) -> None:
        self._request(Request.REBOOT)

    @workflow.signal
    def delete(self) -> None:
        self._request(Request.DELETE)

    def _request(self, request: Request) -> None:
        if request not in self._pending:
            self._pending.append(request.value)
        self._poke()

    def _poke(self) -> None:
        self._changes += 1

    # ---- the loop: execute the lifecycle table ----

    @workflow.run
    async def run(self, inp: HostWorkflowInput) -> HostStatus:
        patches.baseline(inp.baseline)  # first: its one marker (if any) is the run's first command
        start = ON_START.get(self._status.provisioning.state)
        if start is not None:
            self._fire(start)
        await self._publish()
        while True:
            await self._hold_while_paused()
            state = self._status.provisioning.state
            if state in FINAL:
                return await self._finish()
            step = STEPS.get(state)
            if step is not None:
                await self._run_step(state, step)
                continue
            rule = first_rule(REST_RULES, self._facts())
            if rule is not None:
                await self._act(rule)
                continue
            seen = self._changes  # before any await: a change while the slot goes back wakes the wait
            await self._slot.give_back()
            if self._history_too_long():
                await self._publisher.flush()
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._carry_over(), memo=dict(workflow.memo()))
            if not patches.patched(WAKE_PATCH):
                seen = self._changes  # as histories before the fix were made
            await self._wait_for_change(seen)

    def _facts(self) -> Facts:
        return Facts(self._spec, self._status, tuple(self._pending), self._registered_bmc)

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

    async def _act(self, rule: Rule) -> None:
        """Execute a rest (or after-error) rule's action."""
        if rule.consumes is not None and rule.consumes in self._pending:
            self._pending.remove(rule.consumes)
        action = rule.action
        if isinstance(action, Fire):
            self._fire(action.event)
            await self._publish()
        elif isinstance(action, Redo):
            await self._redo(action)
        elif isinstance(action, Power):
            await self._power(action)

    async def _wait_for_change(self, seen: int) -> None:
        """Wait for the operator (any change since `seen`); a resting host also reads its power
        now and then."""
        resting = self._status.provisioning.state in POWER_SYNC.states and self._power_check > 0
        changed = lambda: self._changes != seen  # noqa: E731
        if self._watch.batched:  # its shard reads it (host_power_watch)
            found = await self._watch.rest(resting, self._spec, self._status, self._power_check, changed)
            if found is not None and found.error:
                await self._failed(POWER_SYNC.error_type, "power", reading_error(found))
            elif found is not None:
                await self._power_found(found.powered_on)
            return
        if not (resting and patches.patched(POWER_CHECK_PATCH)):
            return await workflow.wait_condition(changed)
        try:
            await workflow.wait_condition(changed, timeout=timedelta(seconds=self._power_check))
        except TimeoutError:
            await self._check_power()

    # ---- power at rest ----

    async def _check_power(self) -> None:
        """Ironic's power sync: a host switched off (or on) behind metalflow's back is seen, and
        the rules bring it back to spec.online; a BMC that stops answering at rest is an error
        (POWER_SYNC.error_type), cleared when it answers again."""
        try:
            on = await bmc_calls.read_power(self._spec)
        except ActivityError as err:
            return await self._failed(POWER_SYNC.error_type, "power", err)
        await self._power_found(on)

    async def _power_found(self, on: bool) -> None:
        changed = on != self._status.powered_on
        if changed:
            workflow.logger.info("host %s: found powered %s", self._ref.host_id, "on" if on else "off")
        self._status.powered_on = on
        if self._status.error_type == POWER_SYNC.error_type:
            clear_error(self._status)
            changed = True
        if changed:
            await self._publish()

    async def _power(self, power: Power) -> None:
        """A rule's power action; a BMC failing here is the rule's errorType (power management)."""
        try:  # own(): a power reading from before this call is out of date after it
            self._status.powered_on = await self._watch.own(bmc_calls.power(self._spec, power.action))
            clear_error(self._status)
        except ActivityError as err:
            return await self._failed(power.error_type, "power", err)
        await self._publish()

    # ---- steps ----

    async def _run_step(self, state: S, step: Step) -> None:
        await self._watch.unwatch(self._power_check)
        try:
            await self._slot.take(state, self._status, self._publish)
        except ActivityError as err:
            return await self._failed(step.error_type, step.workflow, err)
        metric: OperationMetric | None = (
            getattr(self._status.operation_history, step.metric) if step.metric else None
        )
        if metric is not None and (metric.start is None or metric.end is not None):
            metric.start, metric.end = workflow.now(), None
        if state == S.PROVISIONING:
            # metal3: a new image starts the fail count afresh; status only, no new command
            if self._status.last_attempted_image != self._spec.image:
                self._status.provisioning_fail_count = 0
            self._status.last_attempted_image = self._spec.image
        try:
            await self._watch.own(self._run_stages(state, step))
        except ChildWorkflowError as err:
            if state == S.PROVISIONING:
                self._status.provisioning_fail_count += 1
            return await self._failed(step.error_type, self._status.current_step or step.workflow, err)
        if metric is not None:
            metric.end = workflow.now()
        clear_error(self._status)
        event = completion_event(state, self._facts())
        if step.fulfils is not None:
            self._pending = [r for r in self._pending if r != step.fulfils]
        self._fire(event)
        await self._publish()

    async def _run_stages(self, state: S, step: Step) -> None:
        """The stages whose guard holds, in order; the step workflow's own result is applied."""
        result: StepResult | None = None
        for stage in step.stages:
            if not stage.when(self._facts()) or not patches.stage_allowed(stage):
                continue
            self._status.current_step = stage.workflow
            await self._publish()
            out = await self._child(
                stage.workflow, stage.summary, state, result.join_token if result else None
            )
            if result is None and stage.workflow == step.workflow:
                result = out
                self._apply(state, result)
            elif out.node is not None:  # JoinCluster: the Node the host joined as
                self._status.node = out.node
            elif out.firmware_settings is not None:  # ApplyFirmwareSettings: what the BIOS has now
                self._status.firmware_settings = out.firmware_settings
                self._status.powered_on = out.powered_on
            elif out.firmware_components is not None:  # ApplyFirmwareUpdates: the versions now
                self._status.firmware_components = merged_components(
                    self._status.firmware_components, out.firmware_components
                )
                self._status.powered_on = out.powered_on

    async def _redo(self, redo: Redo) -> None:
        """A step run again in place (re-registration after a BMC change): the state stays."""
        step = STEPS[redo.state]
        self._status.current_step = step.workflow
        try:
            state = self._status.provisioning.state
            self._apply(redo.state, await self._child(step.workflow, redo.summary, state))
            clear_error(self._status)
        except ChildWorkflowError as err:
            record_error(self._status, step.error_type, err, self._ref.host_id, step.workflow)
            self._registered_bmc = self._spec.bmc  # do not loop; the next BMC change retries
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
                spec=self._step_spec(),
                hardware=self._status.hardware,
                powered_on=self._status.powered_on,
                ramdisk_boot_timeout_seconds=self._ramdisk_timeout,
                purpose=purpose(state),
                join_token=join_token,
                system_uuid=self._status.system_uuid,
                node=self._status.node,
                baseline=patches.baseline(),
            ),
            id=f"{workflow.info().workflow_id}/{self._seq:04d}-{name}",
            result_type=StepResult,
            static_summary=f"{name}: {summary}",
        )

    def _step_spec(self) -> HostSpec:
        """The spec a step works with: a host enrolled without spec.bootMACAddress is, once
        inspection saw the NIC it booted from (status.hardware.nics[].pxe), handled as one
        enrolled with that MAC. metal3 likewise keeps the learnt MAC in status, not the spec."""
        learnt = learnt_boot_mac(self._status.hardware)
        if self._spec.boot_mac_address or not learnt or not patches.patched(LEARNT_MAC_PATCH):
            return self._spec
        return self._spec.model_copy(update={"boot_mac_address": learnt})

    def _apply(self, state: S, result: StepResult) -> None:
        apply_result(self._status, self._spec, state, result)
        if state == S.REGISTERING:
            self._registered_bmc = self._spec.bmc

    # ---- errors, pause, the end ----

    async def _failed(
        self, error_type: ErrorType, what: str, err: ChildWorkflowError | ActivityError
    ) -> None:
        record_error(self._status, error_type, err, self._ref.host_id, what)
        early = patches.patched(RETRY_PATCH)  # a retry sent once the error shows, during its publish, counts
        if early:
            self._retry_now, spec_at_failure = False, self._spec
        await self._publish()
        await self._wait_after_error(spec_at_failure if early else None)

    async def _wait_after_error(self, spec_at_failure: HostSpec | None = None) -> None:
        """Back off, but wake at once for a retry, a new spec, or a request `AFTER_ERROR` takes."""
        if spec_at_failure is None:  # as histories before RETRY_PATCH were made
            spec_at_failure, self._retry_now = self._spec, False
        await self._slot.give_back()
        if not patches.patched(WAKE_PATCH):  # as histories before the fix were made
            spec_at_failure, self._retry_now = self._spec, False
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._retry_now or self._spec != spec_at_failure or wakes_backoff(self._facts()),
                timeout=backoff(self._status.error_count),
            )
        self._retry_now = False
        rule = first_rule(AFTER_ERROR, self._facts())
        if rule is not None:
            await self._act(rule)

    async def _hold_while_paused(self) -> None:
        if not (self._paused or self._detached):
            return
        await self._slot.give_back()
        await self._watch.unwatch(self._power_check)  # no BMC traffic for a paused or detached host
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

    async def _finish(self) -> HostStatus:
        """The host is deleted: give back the slot, publish the last status, end the run."""
        await self._slot.give_back()
        await self._watch.unwatch(self._power_check)
        if self._status.system_uuid and patches.patched(FORGET_UUID_PATCH):
            await workflow.execute_activity(  # another host may now be that machine
                BOOT_FORGET_UUID,
                self._ref,
                result_type=bool,
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=LOCAL_RETRY,
                summary=f"free system UUID {self._status.system_uuid}",
            )
        self._status.deleted = True
        self._status.current_step = ""
        await self._publish()
        await self._publisher.flush()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status

    async def _publish(self) -> None:
        await self._publisher.publish(self._spec, self._status, self._paused, self._detached)

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
            power_sync=BATCHED if self._watch.batched else PER_HOST,
            baseline=patches.baseline(),
            power_seq=self._watch.seq,
        )
