"""The Kubernetes Events a BareMetalHost gets, as metal3's baremetal-operator records them.

`host_events(before, after)` says what a status change means for an operator reading
`kubectl describe bmh` or `kubectl get events`: metal3's reasons and messages where metal3 has
one (Registered, BMCAccessValidated, InspectionStarted/Complete, ProvisioningStarted/Complete,
DeprovisioningStarted/Complete, PowerOn/PowerOff, <ErrorType>Error), and ProvisioningStateChanged
for any other transition, so every transition is seen. Errors are `Warning` events (metal3 files
them as Normal; Kubernetes' convention, and `--field-selector type=Warning`, want Warning).
Pure: `before` is the BareMetalHost's status document as the API server holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metalflow.api.models import ErrorType, HostStatus
from metalflow.api.models import ProvisioningState as S
from metalflow.api.states import STEPS, TRANSITIONS

COMPONENT = "metalflow"  # Event.source.component
REPORTING_CONTROLLER = "metalflow.io/host-workflow"

# metal3's error reasons (baremetalhost_controller.go: the errorType's event)
ERROR_REASONS: dict[ErrorType, str] = {
    ErrorType.REGISTRATION: "RegistrationError",
    ErrorType.INSPECTION: "InspectionError",
    ErrorType.PREPARATION: "PreparationError",
    ErrorType.PROVISIONING: "ProvisioningError",
    ErrorType.PROVISIONED_REGISTRATION: "ProvisionedRegistrationError",
    ErrorType.POWER_MANAGEMENT: "PowerManagementError",
    ErrorType.DETACH: "DetachError",
    ErrorType.SERVICING: "ServicingError",
}
# entering a working state
STARTED: dict[S, tuple[str, str]] = {
    S.REGISTERING: ("Registered", "Registered new host"),
    S.INSPECTING: ("InspectionStarted", "Hardware inspection started"),
    S.PROVISIONING: ("ProvisioningStarted", "Image provisioning started"),
    S.DEPROVISIONING: ("DeprovisioningStarted", "Image deprovisioning started"),
}
# a working state's step done (the state its success leads to)
COMPLETED: dict[S, tuple[str, str]] = {
    S.REGISTERING: ("BMCAccessValidated", "Verified access to BMC"),
    S.INSPECTING: ("InspectionComplete", "Hardware inspection completed"),
    S.PROVISIONING: ("ProvisioningComplete", "Image provisioning completed"),
    S.DEPROVISIONING: ("DeprovisioningComplete", "Image deprovisioning completed"),
}


@dataclass(frozen=True)
class HostEvent:
    reason: str
    message: str
    warning: bool = False

    @property
    def type(self) -> str:
        return "Warning" if self.warning else "Normal"


def _completed(old: S, new: S) -> bool:
    step = STEPS.get(old)
    return step is not None and TRANSITIONS.get(old, {}).get(step.done) == new


def host_events(before: dict[str, Any], after: HostStatus) -> list[HostEvent]:
    """What changed from BEFORE (the published status document, {} for none) to AFTER."""
    events: list[HostEvent] = []
    old_raw = (before.get("provisioning") or {}).get("state") or ""
    new = after.provisioning.state
    if old_raw != new.value:
        old = S(old_raw) if old_raw in S._value2member_map_ else S.NONE
        image = after.provisioning.image or after.last_attempted_image
        done = COMPLETED.get(old) if _completed(old, new) else None
        if done is not None:
            reason, message = done
            if old == S.PROVISIONING and image is not None:
                message += f" for {image.url}"
            events.append(HostEvent(reason, message))
        started = STARTED.get(new)
        if started is not None:
            reason, message = started
            if new == S.PROVISIONING and image is not None:
                message += f" for {image.url}"
            events.append(HostEvent(reason, message))
        if not events:
            events.append(
                HostEvent("ProvisioningStateChanged", f"{old.value or 'none'} -> {new.value or 'none'}")
            )
    if "poweredOn" in before and bool(before["poweredOn"]) != after.powered_on:
        events.append(
            HostEvent("PowerOn", "Host powered on")
            if after.powered_on
            else HostEvent("PowerOff", "Host powered off")
        )
    if after.error_type is not None and (  # each failure counts, the same one again too
        before.get("errorType") != after.error_type.value
        or before.get("errorMessage") != after.error_message
        or before.get("errorCount") != after.error_count
    ):
        events.append(HostEvent(ERROR_REASONS[after.error_type], after.error_message, warning=True))
    return events
