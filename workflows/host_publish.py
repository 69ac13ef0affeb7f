"""Publishing a host's status: search attributes and memo for the UI, BareMetalHost.status
through the status activity. Called after every change the operator should see.
The status activity is a control call (workflows/control_calls.py): a local activity."""

from __future__ import annotations

from temporalio import workflow

from metalflow.api import search_attributes as sa
from metalflow.api.host import STATUS_PUBLISH, StatusUpdate
from metalflow.api.models import HostRef, HostSpec, HostStatus
from workflows.control_calls import control_call


async def publish(ref: HostRef, spec: HostSpec, status: HostStatus, paused: bool, detached: bool) -> None:
    status.last_updated = workflow.now()
    status.paused = paused
    state = status.provisioning.state
    workflow.upsert_search_attributes(
        [
            sa.HOST_NAME.value_set(ref.name),
            sa.HOST_NAMESPACE.value_set(ref.namespace),
            sa.HOST_STATE.value_set(state.value or "none"),
            sa.BMC_ADDRESS.value_set(spec.bmc.address),
            sa.IMAGE_URL.value_set(spec.image.url if spec.image else ""),
            sa.ERROR_TYPE.value_set(status.error_type.value if status.error_type else ""),
            sa.OPERATIONAL_STATUS.value_set(status.operational_status.value),
        ]
    )
    line = summary(ref, status, paused, detached)
    workflow.upsert_memo({"summary": line})
    workflow.set_current_details(line)  # the UI's "Current Details" (a query: not in history)
    update = StatusUpdate(
        host=ref, status=status, workflow_id=workflow.info().workflow_id, run_id=workflow.info().run_id
    )
    await control_call(STATUS_PUBLISH, update, summary=f"publish status: {state.value or 'none'}")


def summary(ref: HostRef, st: HostStatus, paused: bool, detached: bool) -> str:
    """One line for the UI's memo column: where the host is and what it is doing."""
    parts = [
        f"{ref.namespace}/{ref.name}",
        st.provisioning.state.value or "none",
        "on" if st.powered_on else "off",
    ]
    if st.current_step:
        parts.append(f"running {st.current_step}")
    if st.error_type:
        parts.append(f"{st.error_type.value}: {st.error_message}")
    if paused:
        parts.append("paused")
    if detached:
        parts.append("detached")
    return " | ".join(parts)
