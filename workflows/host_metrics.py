"""A host's metrics, recorded by its own workflow: each finished lifecycle operation's duration
(metal3's operationHistory) and each status published.

Through the workflow's metric meter, which the SDK leaves silent while it replays: an operation
is counted once however often a worker replays the host (the status-publish activity counted
them before, at least once, and only while every publish was an activity). They are served
with the SDK's metrics (METALFLOW_SDK_METRICS_ADDRESS), labelled with namespace, task queue and
workflow type besides their own.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow
from temporalio.common import MetricCounter, MetricHistogramFloat

from metalflow.api.host_metrics import STATUS_PUBLISHES, STEP_DURATION
from metalflow.api.models import HostStatus


class HostMetrics:
    def __init__(self) -> None:
        self._ended: dict[str, datetime | None] | None = None  # None: nothing published this run
        self._steps: MetricHistogramFloat | None = None
        self._publishes: MetricCounter | None = None

    def published(self, status: HostStatus) -> None:
        """Count the publish; observe the operations that ended since the last one. The first
        publish of a run (after continue-as-new) only notes what had ended before it."""
        if self._steps is None or self._publishes is None:
            meter = workflow.metric_meter()
            self._steps = meter.create_histogram_float(
                STEP_DURATION,
                "Duration of finished lifecycle operations (register, inspect, provision, deprovision).",
                "s",
            )
            self._publishes = meter.create_counter(
                STATUS_PUBLISHES, "Host status publishes by the resulting state."
            )
        history = status.operation_history
        ops = {
            "register": history.register_,
            "inspect": history.inspect,
            "provision": history.provision,
            "deprovision": history.deprovision,
        }
        if self._ended is not None:
            for name, op in ops.items():
                if op.start is None or op.end is None or op.end < op.start or op.end == self._ended.get(name):
                    continue
                self._steps.record((op.end - op.start).total_seconds(), {"operation": name})
        self._ended = {name: op.end for name, op in ops.items()}
        self._publishes.add(1, {"state": status.provisioning.state.value or "none"})
