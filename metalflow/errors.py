"""Typed, operator-facing errors. Activities raise these; Temporal carries the type name."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from metalflow.contracts import ErrorName


def permanent(name: ErrorName, message: str) -> ApplicationError:
    """A failure retrying cannot fix: the message must say what to change."""
    return ApplicationError(message, type=name.value, non_retryable=True)


def transient(name: str, message: str) -> ApplicationError:
    """A failure worth retrying with backoff (timeouts, 5xx, connection resets)."""
    return ApplicationError(message, type=name, non_retryable=False)
