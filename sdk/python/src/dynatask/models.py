"""What the client returns: jobs, tasks, pages, events, with Python names and datetimes.

Each type has ``from_wire``, reading the server's JSON (the TypedDicts of ``dynatask._wire``,
which a test keeps equal to openapi.json), so a renamed or retyped field fails mypy here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from . import _wire
from ._convert import Duration, Instant, datetime_from_ms, maybe_datetime

__all__ = [
    "AttemptRecord",
    "Event",
    "EventKind",
    "Job",
    "JobCounts",
    "JobInfo",
    "JobSpec",
    "JobState",
    "JobSummary",
    "Page",
    "TaskInfo",
    "TaskState",
    "TypeInfo",
]

JobState = Literal["running", "succeeded", "failed", "cancelled"]
TaskState = Literal[
    "blocked",
    "queued",
    "running",
    "waiting",
    "completing",
    "succeeded",
    "failed",
    "cancelled",
    "skipped",
]
EventKind = Literal["task", "progress", "job"]

T = TypeVar("T")


def _error(e: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if e is None else dict(e)


@dataclass(frozen=True)
class Job:
    """A submitted job: ``created`` is false when the job id named an existing job."""

    id: str
    root_task_id: str
    created: bool

    @classmethod
    def from_wire(cls, data: _wire.SubmitResultJob) -> Job:
        return cls(id=data["jobId"], root_task_id=data["rootTaskId"], created=data["created"])


@dataclass(frozen=True)
class JobSpec:
    """One job of :meth:`Client.submit_many` (the options are :meth:`Client.submit`'s)."""

    type: str
    payload: Any = None
    job_id: str | None = None
    namespace: str | None = None
    priority: int | None = None
    run_at: Instant | None = None
    delay: Duration | None = None
    max_attempts: int | None = None
    backoff: Duration | None = None
    max_backoff: Duration | None = None
    timeout: Duration | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None


@dataclass(frozen=True)
class JobCounts:
    """A job's tasks by state."""

    blocked: int
    queued: int
    running: int
    waiting: int
    completing: int
    succeeded: int
    failed: int
    cancelled: int
    skipped: int

    @classmethod
    def from_wire(cls, data: _wire.JobInfoCounts) -> JobCounts:
        return cls(
            blocked=data["blocked"],
            queued=data["queued"],
            running=data["running"],
            waiting=data["waiting"],
            completing=data["completing"],
            succeeded=data["succeeded"],
            failed=data["failed"],
            cancelled=data["cancelled"],
            skipped=data["skipped"],
        )


@dataclass(frozen=True)
class JobSummary:
    """A job as listings show it."""

    id: str
    namespace: str
    type: str
    root_task_id: str
    state: JobState
    created_at: datetime
    settled_at: datetime | None

    @property
    def settled(self) -> bool:
        """Whether the job has settled (succeeded, failed or cancelled)."""
        return self.state != "running"

    @classmethod
    def from_wire(cls, data: _wire.JobSummary) -> JobSummary:
        return cls(
            id=data["id"],
            namespace=data["namespace"],
            type=data["type"],
            root_task_id=data["rootTaskId"],
            state=data["state"],
            created_at=datetime_from_ms(data["createdAt"]),
            settled_at=maybe_datetime(data["settledAt"]),
        )


@dataclass(frozen=True)
class JobInfo(JobSummary):
    """A job with its result (or its root task's error) and its tasks counted by state."""

    result: Any = None
    error: dict[str, Any] | None = None
    counts: JobCounts = field(default_factory=lambda: JobCounts(0, 0, 0, 0, 0, 0, 0, 0, 0))
    total: int = 0

    @classmethod
    def from_wire(cls, data: _wire.JobInfo) -> JobInfo:  # type: ignore[override]
        return cls(
            id=data["id"],
            namespace=data["namespace"],
            type=data["type"],
            root_task_id=data["rootTaskId"],
            state=data["state"],
            created_at=datetime_from_ms(data["createdAt"]),
            settled_at=maybe_datetime(data["settledAt"]),
            result=data["result"],
            error=_error(data["error"]),
            counts=JobCounts.from_wire(data["counts"]),
            total=data["total"],
        )


@dataclass(frozen=True)
class AttemptRecord:
    """A failed attempt of a task."""

    attempt: int
    started_at: datetime
    finished_at: datetime
    error: dict[str, Any]

    @classmethod
    def from_wire(cls, data: _wire.AttemptRecord) -> AttemptRecord:
        return cls(
            attempt=data["attempt"],
            started_at=datetime_from_ms(data["startedAt"]),
            finished_at=datetime_from_ms(data["finishedAt"]),
            error=dict(data["error"]),
        )


@dataclass(frozen=True)
class TaskInfo:
    """A task of a job's tree (``attempts``, its failed attempts, only from ``get_task``)."""

    id: str
    job_id: str
    parent_id: str | None
    type: str
    key: str | None
    dedup_key: str | None
    state: TaskState
    payload: Any
    result: Any
    error: dict[str, Any] | None
    progress: Any
    attempt: int
    max_attempts: int | None
    priority: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    settled_at: datetime | None
    open_children: int
    worker_id: str | None
    lease_expires_at: datetime | None
    attempts: tuple[AttemptRecord, ...] = ()

    @property
    def settled(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled", "skipped")

    @classmethod
    def from_wire(cls, data: _wire.TaskInfo) -> TaskInfo:
        return cls(
            id=data["id"],
            job_id=data["jobId"],
            parent_id=data["parentId"],
            type=data["type"],
            key=data["key"],
            dedup_key=data["dedupKey"],
            state=data["state"],
            payload=data["payload"],
            result=data["result"],
            error=_error(data["error"]),
            progress=data["progress"],
            attempt=data["attempt"],
            max_attempts=data["maxAttempts"],
            priority=data["priority"],
            run_at=datetime_from_ms(data["runAt"]),
            created_at=datetime_from_ms(data["createdAt"]),
            started_at=maybe_datetime(data["startedAt"]),
            finished_at=maybe_datetime(data["finishedAt"]),
            settled_at=maybe_datetime(data["settledAt"]),
            open_children=data["openChildren"],
            worker_id=data["workerId"],
            lease_expires_at=maybe_datetime(data["leaseExpiresAt"]),
            attempts=tuple(AttemptRecord.from_wire(a) for a in data.get("attempts", [])),
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``next`` is the cursor of the next page (``None`` on the last)."""

    items: Sequence[T]
    next: str | None

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class TypeInfo:
    """A task type of a namespace: its queued tasks, and whether a live worker serves it."""

    type: str
    queued: int
    served: bool

    @classmethod
    def from_wire(cls, data: _wire.TypeListType) -> TypeInfo:
        return cls(type=data["type"], queued=data["queued"], served=data["served"])


@dataclass(frozen=True)
class Event:
    """An event of the server's stream: a task's new state, a task's progress, or a job settled.

    ``task_id``, ``type`` are set for ``task`` and ``progress`` events; ``state`` for ``task``
    (a task state) and ``job`` (a job state); ``progress`` for ``progress`` events.
    """

    kind: EventKind
    job_id: str
    at: datetime
    task_id: str | None = None
    type: str | None = None
    state: str | None = None
    progress: Any = None
    id: str | None = None

    @classmethod
    def from_wire(cls, data: _wire.Event, event_id: str | None = None) -> Event:
        at = datetime_from_ms(data["at"])
        if data["kind"] == "task":
            return cls(
                kind="task",
                job_id=data["jobId"],
                at=at,
                task_id=data["taskId"],
                type=data["type"],
                state=data["state"],
                id=event_id,
            )
        if data["kind"] == "progress":
            return cls(
                kind="progress",
                job_id=data["jobId"],
                at=at,
                task_id=data["taskId"],
                type=data["type"],
                progress=data["progress"],
                id=event_id,
            )
        return cls(kind="job", job_id=data["jobId"], at=at, state=data["state"], id=event_id)
