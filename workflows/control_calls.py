"""Short control-plane calls run as local activities: status publishes, boot files, config
drives on the boot server, slot requests.

A regular activity costs three history events and a workflow task of its own (the server
dispatches it, a worker polls it, its completion wakes the workflow); these calls take
milliseconds in the worker that already runs the workflow, so they run there as local
activities: one marker event, no extra workflow task. They were more than half of a host's
workflow tasks (`bench.fleet` prints the counts). BMC and agent calls stay regular activities:
they take seconds to hours, heartbeat, and run where the BMC or the host is reached.
Histories from before the patch `control-calls-local` replay the old way.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

from workflows.options import LOCAL_RETRY, LOCAL_TIMEOUT

CONTROL_LOCAL_PATCH = "control-calls-local"


async def control_call(
    activity: str,
    arg: Any,
    *,
    summary: str,
    result_type: type | None = None,
    timeout: timedelta = LOCAL_TIMEOUT,
    retry: RetryPolicy = LOCAL_RETRY,
) -> Any:
    """Run a short control-plane activity: locally in new histories, as a task before the patch."""
    if workflow.patched(CONTROL_LOCAL_PATCH):
        try:
            return await workflow.execute_local_activity(
                activity,
                arg,
                result_type=result_type,
                start_to_close_timeout=timeout,
                retry_policy=retry,
                summary=summary,
            )
        except (ApplicationError, TimeoutError) as err:
            # a local activity's failure arrives bare: wrapped as a task's is, so callers that
            # catch ActivityError (the slot request, the steps' error records) see no difference
            raise ActivityError(
                f"{activity} failed",
                scheduled_event_id=0,
                started_event_id=0,
                identity="",
                activity_type=activity,
                activity_id="",
                retry_state=None,
            ) from err
    return await workflow.execute_activity(
        activity,
        arg,
        result_type=result_type,
        start_to_close_timeout=timeout,
        retry_policy=retry,
        summary=summary,
    )
