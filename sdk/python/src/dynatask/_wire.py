"""Wire types of the dynatask HTTP API: one TypedDict per component of openapi.json.

Written by scripts/gen_wire.py from the repository's openapi.json; tests/test_contract.py
checks every field (name, type, required or not) against the document, so the SDK cannot
drift from the contract unnoticed. Field names are the wire's (camelCase); the public API
converts them to Python names.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from typing_extensions import NotRequired, TypedDict


class AttemptRecord(TypedDict):
    attempt: int
    startedAt: int
    finishedAt: int
    error: TaskError


class CancelRequest(TypedDict):
    reason: NotRequired[str]


class CancelResult(TypedDict):
    cancelled: bool


class ClaimRequest(TypedDict):
    namespace: NotRequired[str]
    types: list[str]
    limit: int
    leaseMs: NotRequired[int]
    workerId: NotRequired[str]
    claimId: NotRequired[str]
    waitMs: NotRequired[int]


class ClaimResult(TypedDict):
    tasks: list[ClaimedTask]


class ClaimedTask(TypedDict):
    id: str
    jobId: str
    parentId: str | None
    namespace: str
    type: str
    payload: Any
    attempt: int
    token: int
    timeoutMs: int | None
    startedAt: int
    leaseExpiresAt: int


class ErrorError(TypedDict):
    code: str
    message: str
    field: NotRequired[str]


class Error(TypedDict):
    error: ErrorError


class Health(TypedDict):
    status: str


class HeartbeatRequestItem(TypedDict):
    id: str
    token: int


class HeartbeatRequest(TypedDict):
    items: list[HeartbeatRequestItem]
    leaseMs: NotRequired[int]


class HeartbeatResult(TypedDict):
    items: list[Literal["ok", "cancelled", "lost"]]


class ItemErrorError(TypedDict):
    code: str
    message: str


class ItemError(TypedDict):
    error: ItemErrorError


class JobEvent(TypedDict):
    kind: Literal["job"]
    jobId: str
    state: JobState
    at: int


class JobInfoCounts(TypedDict):
    blocked: int
    queued: int
    running: int
    waiting: int
    completing: int
    succeeded: int
    failed: int
    cancelled: int
    skipped: int


class JobInfo(TypedDict):
    id: str
    namespace: str
    type: str
    rootTaskId: str
    state: JobState
    createdAt: int
    settledAt: int | None
    result: Any
    error: TaskError | None
    counts: JobInfoCounts
    total: int


class JobPage(TypedDict):
    jobs: list[JobSummary]
    next: str | None


class JobSummary(TypedDict):
    id: str
    namespace: str
    type: str
    rootTaskId: str
    state: JobState
    createdAt: int
    settledAt: int | None


class Outcome(TypedDict):
    taskId: str
    state: Literal["succeeded", "failed", "cancelled", "skipped"]
    result: NotRequired[Any]
    error: NotRequired[TaskError]


class ProgressEvent(TypedDict):
    kind: Literal["progress"]
    jobId: str
    taskId: str
    type: str
    progress: Any
    at: int


class ProgressRequest(TypedDict):
    id: str
    token: int
    progress: Any


class ReleaseRequestItem(TypedDict):
    id: str
    token: int


class ReleaseRequest(TypedDict):
    items: list[ReleaseRequestItem]


class ReleaseResult(TypedDict):
    items: list[Literal["ok", "stale"]]


class ReportRequestCompleted(TypedDict):
    id: str
    token: int
    result: NotRequired[Any]


class ReportRequestFailedError(TypedDict):
    name: NotRequired[str]
    message: str
    stack: NotRequired[str]
    retryable: NotRequired[bool]


class ReportRequestFailed(TypedDict):
    id: str
    token: int
    error: ReportRequestFailedError


class ReportRequestClaim(TypedDict):
    namespace: NotRequired[str]
    types: list[str]
    limit: int
    leaseMs: NotRequired[int]
    workerId: NotRequired[str]
    claimId: NotRequired[str]


class ReportRequest(TypedDict):
    completed: NotRequired[list[ReportRequestCompleted]]
    failed: NotRequired[list[ReportRequestFailed]]
    claim: NotRequired[ReportRequestClaim]


class ReportResult(TypedDict):
    completed: list[Literal["ok", "stale"]]
    failed: list[Literal["ok", "stale"]]
    tasks: list[ClaimedTask]


class RetryRequest(TypedDict):
    attempt: NotRequired[int]


class RetryResult(TypedDict):
    retried: bool


class ServerSentEvent(TypedDict):
    id: NotRequired[str]
    event: NotRequired[str]
    retry: NotRequired[int]
    data: str


class SpawnOptionsConcurrency(TypedDict):
    key: str
    limit: int


class SpawnOptions(TypedDict):
    maxAttempts: NotRequired[int]
    backoffMs: NotRequired[int]
    maxBackoffMs: NotRequired[int]
    priority: NotRequired[int]
    runAt: NotRequired[int]
    delayMs: NotRequired[int]
    timeoutMs: NotRequired[int]
    concurrency: NotRequired[SpawnOptionsConcurrency]
    key: str
    dedupKey: NotRequired[str]
    after: NotRequired[list[str]]
    runRegardless: NotRequired[bool]
    ignoreFailure: NotRequired[bool]


class SpawnRequestItemChildren(TypedDict):
    type: str
    payload: NotRequired[Any]
    options: SpawnOptions


class SpawnRequestItem(TypedDict):
    id: str
    token: int
    children: list[SpawnRequestItemChildren]


class SpawnRequest(TypedDict):
    items: list[SpawnRequestItem]


class SpawnResult(TypedDict):
    items: list[SpawnedChildren | ItemError]


class SpawnedChildren(TypedDict):
    children: list[TaskHandle]


class StepGetRequest(TypedDict):
    id: str
    token: int
    name: str


class StepPutRequest(TypedDict):
    id: str
    token: int
    name: str
    value: NotRequired[Any]


class StepValue(TypedDict):
    found: bool
    value: NotRequired[Any]


class SubmitOptionsConcurrency(TypedDict):
    key: str
    limit: int


class SubmitOptions(TypedDict):
    maxAttempts: NotRequired[int]
    backoffMs: NotRequired[int]
    maxBackoffMs: NotRequired[int]
    priority: NotRequired[int]
    runAt: NotRequired[int]
    delayMs: NotRequired[int]
    timeoutMs: NotRequired[int]
    concurrency: NotRequired[SubmitOptionsConcurrency]
    namespace: NotRequired[str]
    jobId: NotRequired[str]


class SubmitRequestJob(TypedDict):
    type: str
    payload: NotRequired[Any]
    options: NotRequired[SubmitOptions]


class SubmitRequest(TypedDict):
    jobs: list[SubmitRequestJob]


class SubmitResultJob(TypedDict):
    jobId: str
    rootTaskId: str
    created: bool


class SubmitResult(TypedDict):
    jobs: list[SubmitResultJob]


class TaskError(TypedDict):
    name: str
    message: str
    stack: NotRequired[str]
    retryable: NotRequired[bool]
    childTaskId: NotRequired[str]


class TaskEvent(TypedDict):
    kind: Literal["task"]
    jobId: str
    taskId: str
    type: str
    state: TaskState
    at: int


class TaskHandle(TypedDict):
    id: str
    type: str
    key: str
    created: bool
    parentId: str | None


class TaskInfo(TypedDict):
    id: str
    jobId: str
    parentId: str | None
    type: str
    key: str | None
    dedupKey: str | None
    state: TaskState
    payload: Any
    result: Any
    error: TaskError | None
    progress: Any
    attempt: int
    maxAttempts: int | None
    priority: int
    runAt: int
    createdAt: int
    startedAt: int | None
    finishedAt: int | None
    settledAt: int | None
    openChildren: int
    workerId: str | None
    leaseExpiresAt: int | None
    attempts: NotRequired[list[AttemptRecord]]


class TaskPage(TypedDict):
    tasks: list[TaskInfo]
    next: str | None


class TypeListType(TypedDict):
    type: str
    queued: int
    served: bool


class TypeList(TypedDict):
    types: list[TypeListType]


class TypeSettingsRequestType(TypedDict):
    type: str
    maxAttempts: NotRequired[int]
    backoffMs: NotRequired[int]
    maxBackoffMs: NotRequired[int]
    timeoutMs: NotRequired[int]
    concurrency: NotRequired[int]


class TypeSettingsRequest(TypedDict):
    namespace: NotRequired[str]
    types: list[TypeSettingsRequestType]


class WaitOutcomes(TypedDict):
    suspended: Literal[False]
    outcomes: list[Outcome]


class WaitRequestItem(TypedDict):
    id: str
    token: int
    all: NotRequired[bool]
    ids: NotRequired[list[str]]


class WaitRequest(TypedDict):
    items: list[WaitRequestItem]


class WaitResult(TypedDict):
    items: list[WaitSuspended | WaitOutcomes | ItemError]


class WaitSuspended(TypedDict):
    suspended: Literal[True]


class WorkerStopRequest(TypedDict):
    workerId: str


Event: TypeAlias = TaskEvent | ProgressEvent | JobEvent
JobState: TypeAlias = Literal["running", "succeeded", "failed", "cancelled"]
TaskState: TypeAlias = Literal[
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
