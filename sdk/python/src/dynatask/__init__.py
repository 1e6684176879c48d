"""dynatask: serve and submit dependent, durable task trees from Python.

The SDK speaks dynatask's HTTP worker protocol (docs/http-api.md) to a ``dynatask server``.
"""

from __future__ import annotations

from ._convert import Duration, Instant
from .aio import AsyncClient
from .client import Client
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
from .models import (
    AttemptRecord,
    Event,
    EventKind,
    Job,
    JobCounts,
    JobInfo,
    JobSpec,
    JobState,
    JobSummary,
    Page,
    TaskInfo,
    TaskState,
    TypeInfo,
)
from .outcome import Outcome
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncTaskContext",
    "AttemptRecord",
    "AuthError",
    "Child",
    "ChildTaskFailedError",
    "Client",
    "ConflictError",
    "Duration",
    "DynataskError",
    "Event",
    "EventKind",
    "Instant",
    "Job",
    "JobCounts",
    "JobInfo",
    "JobSpec",
    "JobState",
    "JobSummary",
    "NonRetryableError",
    "NotFoundError",
    "Outcome",
    "Page",
    "PayloadTooLargeError",
    "StaleAttemptError",
    "TaskContext",
    "TaskFailedError",
    "TaskHandle",
    "TaskInfo",
    "TaskState",
    "TypeInfo",
    "UnreachableError",
    "ValidationError",
    "Worker",
    "__version__",
]
