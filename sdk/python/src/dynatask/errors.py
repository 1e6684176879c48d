"""Exceptions of the dynatask SDK.

Every error the SDK raises is a :class:`DynataskError` carrying the server's error ``code``,
the HTTP ``status`` (``0`` when no answer came) and its ``message``. The subclasses mirror the
codes of the HTTP API (docs/http-api.md), so callers catch what they mean::

    try:
        client.retry_task(task_id)
    except dynatask.ConflictError:
        ...  # the task has not failed
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .outcome import Outcome

__all__ = [
    "AuthError",
    "ChildTaskFailedError",
    "ConflictError",
    "DynataskError",
    "NonRetryableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "StaleAttemptError",
    "TaskFailedError",
    "UnreachableError",
    "ValidationError",
    "error_from_response",
]


class DynataskError(Exception):
    """Base class of every error of the SDK."""

    code: str
    status: int
    message: str

    def __init__(self, message: str, *, code: str = "error", status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status}, {self.message!r})"


class ValidationError(DynataskError):
    """400 ``invalid_request``: bad input; ``field`` names the offending field when known.

    ``field`` is the server's JSON pointer within the body (``/jobs/0/type``) or ``/name`` of a
    query or path parameter.
    """

    field: str | None

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid_request",
        status: int = 400,
        field: str | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.field = field


class PayloadTooLargeError(ValidationError):
    """413 ``payload_too_large``: a request body over the server's ``--body-limit``."""


class NotFoundError(DynataskError):
    """404 ``not_found``: an unknown job or task id (or route)."""


class StaleAttemptError(DynataskError):
    """409 ``stale_attempt``: the attempt token no longer holds the task (lease expired...)."""


class ConflictError(DynataskError):
    """409 ``conflict``: the state does not allow the operation (e.g. retrying an unfailed task)."""


class AuthError(DynataskError):
    """401 ``unauthorized`` (missing or unknown token) or 403 ``forbidden`` (scope lacking)."""


class UnreachableError(DynataskError):
    """No answer from the server before the retries gave up; the message names the URL."""


class TaskFailedError(DynataskError):
    """A job did not succeed: ``error`` is its root task's error (``{name, message, stack?}``)."""

    job_id: str
    state: str
    error: dict[str, Any]

    def __init__(self, job_id: str, state: str, error: Mapping[str, Any] | None) -> None:
        err = dict(error or {})
        detail = f": {err.get('message')}" if err.get("message") is not None else ""
        super().__init__(f"job {job_id} {state}{detail}", code=f"job_{state}", status=0)
        self.job_id = job_id
        self.state = state
        self.error = err


class ChildTaskFailedError(DynataskError):
    """``ctx.wait_all``: an awaited child did not succeed; ``failures`` are their outcomes."""

    failures: list[Outcome]

    def __init__(self, failures: list[Outcome]) -> None:
        first = failures[0] if failures else None
        what = ""
        if first is not None:
            message = (first.error or {}).get("message", "")
            what = f"; first: {first.task_id} {first.state}: {message}"
        super().__init__(
            f"{len(failures)} awaited child task(s) did not succeed{what}",
            code="child_task_failed",
        )
        self.failures = failures


class NonRetryableError(Exception):
    """Raise this from a handler to fail the task at once, without further attempts."""


_BY_CODE: dict[str, type[DynataskError]] = {
    "invalid_request": ValidationError,
    "payload_too_large": PayloadTooLargeError,
    "not_found": NotFoundError,
    "stale_attempt": StaleAttemptError,
    "conflict": ConflictError,
    "unauthorized": AuthError,
    "forbidden": AuthError,
}


def error_from_response(status: int, body: object) -> DynataskError:
    """The exception for the server's ``{"error": {"code", "message", "field"?}}`` answer."""
    err = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(err, Mapping):
        err = {}
    code = err.get("code")
    if not isinstance(code, str):
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            413: "payload_too_large",
        }.get(status, f"http_{status}")
    message = err.get("message")
    if not isinstance(message, str):
        message = f"HTTP {status}"
    return error_from_item(code, message, status=status, field=err.get("field"))


def error_from_item(
    code: str, message: str, *, status: int = 0, field: object = None
) -> DynataskError:
    """The exception for an error code (also a batched item's ``{"error": {code, message}}``)."""
    cls = _BY_CODE.get(code, DynataskError)
    if issubclass(cls, ValidationError):
        return cls(
            message,
            code=code,
            status=status or (413 if code == "payload_too_large" else 400),
            field=field if isinstance(field, str) else None,
        )
    default_status = {
        "not_found": 404,
        "stale_attempt": 409,
        "conflict": 409,
        "unauthorized": 401,
        "forbidden": 403,
    }.get(code, 0)
    return cls(message, code=code, status=status or default_status)
