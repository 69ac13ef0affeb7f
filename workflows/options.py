"""Timeouts and retry policies, in one place so every step treats the same work alike."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from metalflow.api.errors import ErrorName

_PERMANENT = [e.value for e in ErrorName]

# BMCs are slow and flaky: retry transient faults with backoff, but boundedly, so a dead BMC
# ends in "power management error" instead of retrying forever.
BMC_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=_PERMANENT,
)
BMC_TIMEOUT = timedelta(minutes=4)
# BMC activities heartbeat while they wait on the BMC: a call lost with its worker is retried
# after this, not after BMC_TIMEOUT.
BMC_HEARTBEAT = timedelta(seconds=15)

# In-band work retries few times: each attempt restarts cleanly, but a bad image stays bad.
AGENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=3,
    non_retryable_error_types=_PERMANENT,
)
AGENT_SHORT_TIMEOUT = timedelta(minutes=5)
IMAGE_WRITE_TIMEOUT = timedelta(hours=2)
IMAGE_WRITE_HEARTBEAT = timedelta(seconds=60)
# spec.erase: an overwrite of a large HDD runs for hours; the agent heartbeats while it works.
ERASE_TIMEOUT = timedelta(hours=12)
ERASE_HEARTBEAT = timedelta(seconds=120)
# How long to try a ramdisk that may already be up (Ironic's fast-track) before booting one.
FAST_TRACK_PROBE = timedelta(seconds=15)

LOCAL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=5,
    non_retryable_error_types=_PERMANENT,
)
# Short local work (status publish, boot files): the timeout is also how long a call lost with
# a crashed worker waits before its retry.
LOCAL_TIMEOUT = timedelta(seconds=30)
