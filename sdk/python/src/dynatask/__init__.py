"""dynatask: serve and submit dependent, durable task trees from Python.

The SDK speaks dynatask's HTTP worker protocol (docs/http-api.md) to a ``dynatask server``.
"""

from __future__ import annotations

from .context import AsyncTaskContext, Child, TaskContext, TaskHandle
from .errors import (
    AuthError,
    ChildTaskFailedError,
    ConflictError,
    DynataskError,
    NonRetryableError,
    NotFoundError,
    PayloadTooLargeError,
    StaleAttemptError,
    TaskFailedError,
    UnreachableError,
    ValidationError,
)
from .outcome import Outcome
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "AsyncTaskContext",
    "AuthError",
    "Child",
    "ChildTaskFailedError",
    "ConflictError",
    "DynataskError",
    "NonRetryableError",
    "NotFoundError",
    "Outcome",
    "PayloadTooLargeError",
    "StaleAttemptError",
    "TaskContext",
    "TaskFailedError",
    "TaskHandle",
    "UnreachableError",
    "ValidationError",
    "Worker",
    "__version__",
]
