"""HostWorkflow: one long-lived workflow per host (id `host/<namespace>/<name>`).

It owns the host's lifecycle state and moves it only through `states.TRANSITIONS`. Working
states run their step as a child workflow; stable states wait for the operator (spec
Update, Signals). Status is a Query, is mirrored to search attributes and memo for the UI,
and is published through the status activity (BareMetalHost.status).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, FailureError

from metalflow.api import search_attributes as sa
from metalflow.api.bmc import PowerAction
from metalflow.api.fleet import (
    LIMITER_REQUEST,
    SLOT_GRANTED_SIGNAL,
    SLOT_QUEUED_SIGNAL,
    SLOT_RELEASE_SIGNAL,
    SlotRequest,
    limiter_id,
)
from metalflow.api.host import (
    HOST_WORKFLOW,
    JOIN_CLUSTER,
    REGISTER_HOST,
    STATUS_PUBLISH,
    HostWorkflowInput,
    StatusUpdate,
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
from metalflow.api.states import LIMITED, STABLE, STEPS, Event, Step, allowed, next_state
from workflows import bmc_calls
from workflows.options import LOCAL_RETRY, LOCAL_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from metalflow.api.validation import validate_update

# Power changes at rest are not a lifecycle step, but fail like one.
POWER_AT_REST = Step("power", Event.POWERED_OFF, ErrorType.POWER_MANAGEMENT, "power at rest")

# Backoff before retrying a failed step by itself; an operator's retry or a spec change is immediate.
ERROR_BACKOFF_BASE = timedelta(seconds=30)
ERROR_BACKOFF_MAX = timedelta(minutes=10)

# Histories recorded before the provisioning limit took no slots; they replay without them.
LIMIT_PATCH = "provisioning-limit"
ASK_AGAIN = timedelta(minutes=5)  # a host waiting for its slot repeats its request this often
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
        self._slot = False  # holds one of the namespace's provisioning slots
        self._granted = False
        self._queued = False

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
        self._granted = True

    @workflow.signal(name=SLOT_QUEUED_SIGNAL)
    def slot_queued(self) -> None:
        """No slot free: this host waits in the limiter's line (operationalStatus delayed)."""
        self._queued = True

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
            await self._give_back_slot()
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
            self._clear_error()
            changed = True
        if changed:
            await self._publish()

    async def _hold_while_paused(self) -> None:
        if not (self._paused or self._detached):
            return
        await self._give_back_slot()
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
            self._clear_error()
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
            await self._take_slot(state)
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
        self._clear_error()
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
            self._clear_error()
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
            self._status.bmc_driver = result.bmc_driver
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

    # ---- provisioning limit ----

    async def _take_slot(self, state: S) -> None:
        """Wait for a slot before a limited state; show metal3's "delayed" while waiting."""
        if self._slot or state not in LIMITED or not workflow.patched(LIMIT_PATCH):
            return
        self._granted = self._queued = False
        await self._request_slot()
        await self._wait_for_slot_answer(lambda: self._granted or self._queued)
        if not self._granted:
            previous = self._status.operational_status
            self._status.operational_status = OperationalStatus.DELAYED
            await self._publish()
            await self._wait_for_slot_answer(lambda: self._granted)
            self._status.operational_status = previous
        self._slot = True

    async def _request_slot(self) -> None:
        info = workflow.info()
        await workflow.execute_activity(
            LIMITER_REQUEST,
            SlotRequest(namespace=self._ref.namespace, holder=info.workflow_id, task_queue=info.task_queue),
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
            summary="ask for a provisioning slot",
        )

    async def _wait_for_slot_answer(self, answered: Callable[[], bool]) -> None:
        """Ask again now and then: requests are idempotent, and a limiter that was terminated
        meanwhile starts afresh, so no host waits forever for an answer that is lost."""
        while True:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(answered, timeout=ASK_AGAIN)
            if answered():
                return
            await self._request_slot()

    async def _give_back_slot(self) -> None:
        if not self._slot:
            return
        self._slot = False
        limiter = workflow.get_external_workflow_handle(limiter_id(self._ref.namespace))
        try:
            await limiter.signal(SLOT_RELEASE_SIGNAL, workflow.info().workflow_id)
        except FailureError as err:  # the limiter was terminated: the next request starts a new one
            workflow.logger.warning("host %s: could not give back its slot: %s", self._ref.host_id, err)

    # ---- errors ----

    def _record_error(self, step: Step, err: ChildWorkflowError | ActivityError) -> None:
        message, kind = _root_cause(err)
        self._status.operational_status = OperationalStatus.ERROR
        self._status.error_type = step.error_type
        self._status.error_message = f"{message} ({kind})" if kind else message
        self._status.error_count += 1
        self._status.current_step = ""
        workflow.logger.warning(
            "host %s: %s failed: %s", self._ref.host_id, step.workflow, self._status.error_message
        )

    def _clear_error(self) -> None:
        self._status.operational_status = OperationalStatus.OK
        self._status.error_type = None
        self._status.error_message = ""
        self._status.error_count = 0

    async def _wait_after_error(self) -> None:
        """Back off (metal3 does too), but wake at once for a retry, a new spec, or a delete."""
        await self._give_back_slot()
        backoff = min(ERROR_BACKOFF_BASE * (2 ** max(self._status.error_count - 1, 0)), ERROR_BACKOFF_MAX)
        spec_at_failure = self._spec
        self._retry_now = False
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._retry_now or self._spec != spec_at_failure or Request.DELETE in self._pending,
                timeout=backoff,
            )
        self._retry_now = False
        if Request.DELETE in self._pending and allowed(self._status.provisioning.state, Event.DELETE):
            self._fire(Event.DELETE)
            await self._publish()

    # ---- delete, status, continue-as-new ----

    async def _finish_delete(self) -> HostStatus:
        await self._give_back_slot()
        self._status.deleted = True
        self._status.current_step = ""
        await self._publish()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status

    async def _publish(self) -> None:
        self._status.last_updated = workflow.now()
        self._status.paused = self._paused
        state = self._status.provisioning.state
        workflow.upsert_search_attributes(
            [
                sa.HOST_NAME.value_set(self._ref.name),
                sa.HOST_NAMESPACE.value_set(self._ref.namespace),
                sa.HOST_STATE.value_set(state.value or "none"),
                sa.BMC_ADDRESS.value_set(self._spec.bmc.address),
                sa.IMAGE_URL.value_set(self._spec.image.url if self._spec.image else ""),
                sa.ERROR_TYPE.value_set(self._status.error_type.value if self._status.error_type else ""),
                sa.OPERATIONAL_STATUS.value_set(self._status.operational_status.value),
            ]
        )
        workflow.upsert_memo({"summary": self._summary()})
        await workflow.execute_activity(
            STATUS_PUBLISH,
            StatusUpdate(
                host=self._ref,
                status=self._status,
                workflow_id=workflow.info().workflow_id,
                run_id=workflow.info().run_id,
            ),
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=LOCAL_RETRY,
            summary=f"publish status: {state.value or 'none'}",
        )

    def _summary(self) -> str:
        st = self._status
        parts = [
            f"{self._ref.namespace}/{self._ref.name}",
            st.provisioning.state.value or "none",
            "on" if st.powered_on else "off",
        ]
        if st.current_step:
            parts.append(f"running {st.current_step}")
        if st.error_type:
            parts.append(f"{st.error_type.value}: {st.error_message}")
        if self._paused:
            parts.append("paused")
        if self._detached:
            parts.append("detached")
        return " | ".join(parts)

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


def _root_cause(err: BaseException) -> tuple[str, str]:
    """The innermost failure's message and type: what the operator needs, not the wrapping."""
    cause: BaseException | None = err
    message, kind = str(err), ""
    while cause is not None:
        if isinstance(cause, ApplicationError):
            message, kind = cause.message, cause.type or ""
        elif isinstance(cause, FailureError) and not isinstance(cause, ChildWorkflowError):
            message = str(cause) or message
            kind = kind or type(cause).__name__
        cause = cause.__cause__
    return message, kind
