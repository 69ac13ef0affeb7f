"""metalflow.api.events: what each status change records on the BareMetalHost (pure)."""

from __future__ import annotations

from metalflow.api.events import host_events
from metalflow.api.models import ErrorType, HostStatus, ImageSpec, ProvisionStatus
from metalflow.api.models import ProvisioningState as S
from metalflow.api.status import bmh_status

IMAGE = ImageSpec(url="http://192.0.2.1/os.img", checksum="a" * 64)


def status(state: S, **fields: object) -> HostStatus:
    return HostStatus(provisioning=ProvisionStatus(state=state), **fields)  # type: ignore[arg-type]


def reasons(before: HostStatus | None, after: HostStatus) -> list[tuple[str, str]]:
    doc = bmh_status(before) if before is not None else {}
    return [(e.reason, e.message) for e in host_events(doc, after)]


def test_metal3s_reasons_for_the_lifecycle_and_one_for_every_other_transition() -> None:
    assert reasons(None, status(S.REGISTERING)) == [("Registered", "Registered new host")]
    assert reasons(status(S.REGISTERING), status(S.INSPECTING)) == [
        ("BMCAccessValidated", "Verified access to BMC"),
        ("InspectionStarted", "Hardware inspection started"),
    ]
    assert reasons(status(S.INSPECTING), status(S.PREPARING)) == [
        ("InspectionComplete", "Hardware inspection completed")
    ]
    assert reasons(status(S.PREPARING), status(S.AVAILABLE)) == [
        ("ProvisioningStateChanged", "preparing -> available")
    ]
    provisioning = status(S.PROVISIONING, last_attempted_image=IMAGE)
    assert reasons(status(S.AVAILABLE), provisioning) == [
        ("ProvisioningStarted", f"Image provisioning started for {IMAGE.url}")
    ]
    done = status(S.PROVISIONED, last_attempted_image=IMAGE)
    done.provisioning.image = IMAGE
    assert reasons(provisioning, done) == [
        ("ProvisioningComplete", f"Image provisioning completed for {IMAGE.url}")
    ]
    # provisioning given up for deprovisioning (the image changed): not "complete"
    assert reasons(provisioning, status(S.DEPROVISIONING)) == [
        ("DeprovisioningStarted", "Image deprovisioning started")
    ]
    assert reasons(status(S.DEPROVISIONING), status(S.AVAILABLE)) == [
        ("DeprovisioningComplete", "Image deprovisioning completed")
    ]
    assert reasons(done, done) == []  # a publish that changes nothing an operator follows


def test_power_and_errors_each_failure_counted() -> None:
    on = status(S.PROVISIONED, powered_on=True)
    assert reasons(on, status(S.PROVISIONED, powered_on=False)) == [("PowerOff", "Host powered off")]
    assert reasons(status(S.PROVISIONED, powered_on=False), on) == [("PowerOn", "Host powered on")]
    failed = status(
        S.PROVISIONING, error_type=ErrorType.PROVISIONING, error_message="bad checksum", error_count=1
    )
    [event] = host_events(bmh_status(status(S.PROVISIONING)), failed)
    assert (event.reason, event.message, event.type) == ("ProvisioningError", "bad checksum", "Warning")
    again = failed.model_copy(update={"error_count": 2})
    assert reasons(failed, again) == [("ProvisioningError", "bad checksum")]  # the same failure, again
    assert reasons(again, again) == []
