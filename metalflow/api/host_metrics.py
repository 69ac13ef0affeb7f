"""The metrics a HostWorkflow records itself (workflows/host_metrics.py), by name, with their
buckets (the worker's SDK runtime sets them: metalflow.runtime.metrics.sdk_runtime)."""

from __future__ import annotations

STEP_DURATION = "metalflow_step_duration_seconds"
STATUS_PUBLISHES = "metalflow_status_publishes_total"

# Steps run from seconds (registration) to hours (a big image over a slow link).
STEP_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
