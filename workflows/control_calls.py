"""Short control-plane calls: status publishes, boot files, config drives on the boot server,
slot requests. They run as activity tasks.

Withdrawn (2026-12-05): running them as local activities (patch `control-calls-local`) cut a
third of the control plane's CPU, but a HostWorkflow whose first `workflow.patched()` of a patch
came right after a local activity in the same workflow task could not be replayed for a query on
a worker without it in cache (TMPRL1100 "patch marker encountered ... no corresponding change
command"; tests/test_campaign_crash.py, one run in four). Until patches are evaluated before any
local activity of a task, these stay tasks. What follows describes the design that was measured.

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

from workflows.options import LOCAL_RETRY, LOCAL_TIMEOUT


async def control_call(
    activity: str,
    arg: Any,
    *,
    summary: str,
    result_type: type | None = None,
    timeout: timedelta = LOCAL_TIMEOUT,
    retry: RetryPolicy = LOCAL_RETRY,
) -> Any:
    """Run a short control-plane activity (as a task: see the module's note)."""
    return await workflow.execute_activity(
        activity,
        arg,
        result_type=result_type,
        start_to_close_timeout=timeout,
        retry_policy=retry,
        summary=summary,
    )
