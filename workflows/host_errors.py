"""A host's error fields (metal3's errorType, errorMessage, errorCount) and its back-off."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, FailureError

from metalflow.api.models import ErrorType, HostStatus, OperationalStatus

# Backoff before retrying a failed step by itself; an operator's retry or a spec change is immediate.
ERROR_BACKOFF_BASE = timedelta(seconds=30)
ERROR_BACKOFF_MAX = timedelta(minutes=10)


def record_error(
    status: HostStatus,
    error_type: ErrorType,
    err: ChildWorkflowError | ActivityError,
    host_id: str,
    what: str,
) -> None:
    message, kind = root_cause(err)
    status.operational_status = OperationalStatus.ERROR
    status.error_type = error_type
    status.error_message = f"{message} ({kind})" if kind else message
    status.error_count += 1
    status.current_step = ""
    workflow.logger.warning("host %s: %s failed: %s", host_id, what, status.error_message)


def clear_error(status: HostStatus) -> None:
    status.operational_status = OperationalStatus.OK
    status.error_type = None
    status.error_message = ""
    status.error_count = 0


def backoff(error_count: int) -> timedelta:
    """Doubling with each failure in a row, capped (metal3 backs off too)."""
    return min(ERROR_BACKOFF_BASE * (2 ** max(error_count - 1, 0)), ERROR_BACKOFF_MAX)


def root_cause(err: BaseException) -> tuple[str, str]:
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
