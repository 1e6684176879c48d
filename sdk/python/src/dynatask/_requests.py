"""The requests of the client, built once for :class:`Client` and :class:`AsyncClient`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

from . import _wire
from ._convert import Instant, instant_ms, jsonable, submit_options, uuid7
from .errors import DynataskError, TaskFailedError, ValidationError
from .models import Event, EventKind, Job, JobInfo, JobSpec, JobState

SUBMIT_BATCH = 1000
"""The most jobs one ``POST /v1/jobs`` carries (the server's batch bound)."""

WAIT_FIRST = 0.02
WAIT_MAX = 0.5


def seg(value: str) -> str:
    """A path segment (ids are UUIDs; anything else is escaped, and the server says 400/404)."""
    return quote(str(value), safe="")


def submit_items(jobs: Iterable[JobSpec], namespace: str) -> list[_wire.SubmitRequestJob]:
    items: list[_wire.SubmitRequestJob] = []
    for spec in jobs:
        if not isinstance(spec, JobSpec):
            raise ValidationError("submit_many takes JobSpec values", field="jobs")
        opts = submit_options(
            namespace=spec.namespace or namespace,
            # A job id chosen here makes the submission safe to repeat after a lost answer.
            job_id=spec.job_id or uuid7(),
            priority=spec.priority,
            run_at=spec.run_at,
            delay=spec.delay,
            max_attempts=spec.max_attempts,
            backoff=spec.backoff,
            max_backoff=spec.max_backoff,
            timeout=spec.timeout,
            concurrency_key=spec.concurrency_key,
            concurrency_limit=spec.concurrency_limit,
        )
        item: _wire.SubmitRequestJob = {"type": spec.type, "options": opts}
        payload = jsonable(spec.payload)
        if payload is not None:
            item["payload"] = payload
        items.append(item)
    return items


def batches(items: Sequence[_wire.SubmitRequestJob]) -> list[_wire.SubmitRequest]:
    return [{"jobs": list(items[i : i + SUBMIT_BATCH])} for i in range(0, len(items), SUBMIT_BATCH)]


def jobs_of(answer: Any) -> list[Job]:
    return [Job.from_wire(j) for j in cast(_wire.SubmitResult, answer)["jobs"]]


def list_params(
    *,
    namespace: str,
    state: JobState | None,
    type: str | None,
    created_after: Instant | None,
    created_before: Instant | None,
    limit: int | None,
    cursor: str | None,
) -> dict[str, object]:
    return {
        "namespace": namespace,
        "state": state,
        "type": type,
        "createdAfter": None
        if created_after is None
        else instant_ms(created_after, "created_after"),
        "createdBefore": None
        if created_before is None
        else instant_ms(created_before, "created_before"),
        "before": cursor,
        "limit": limit,
    }


def cancel_body(reason: str | None) -> _wire.CancelRequest:
    return {} if reason is None else {"reason": reason}


def result_of(info: JobInfo) -> Any:
    """The job's result, or :class:`TaskFailedError` when it did not succeed."""
    if info.state == "succeeded":
        return info.result
    raise TaskFailedError(info.id, info.state, info.error)


def next_wait(delay: float) -> float:
    return min(WAIT_MAX, delay * 1.5)


def events_path(job_id: str | None) -> str:
    return "/v1/events" if job_id is None else f"/v1/jobs/{seg(job_id)}/events"


def events_params(kinds: Iterable[EventKind] | None) -> dict[str, str]:
    if kinds is None:
        return {}
    chosen = list(kinds)
    for k in chosen:
        if k not in ("task", "progress", "job"):
            raise ValidationError(f"kinds: {k!r} is not task, progress or job", field="kinds")
    return {"kinds": ",".join(chosen)}


def parse_event(data: str, event_id: str | None) -> Event | None:
    """An event from one SSE ``data`` field (``None`` for an empty one)."""
    if not data.strip():
        return None
    try:
        parsed = json.loads(data)
    except ValueError as e:
        raise DynataskError(
            f"event stream: data is not JSON: {data[:200]!r}", code="bad_response"
        ) from e
    return Event.from_wire(cast(_wire.Event, parsed), event_id or None)


@dataclass
class StreamEnd:
    """Whether a job's stream is over: its job event came (it settled)."""

    job_id: str | None
    until_settled: bool

    def done(self, event: Event) -> bool:
        return (
            self.until_settled
            and self.job_id is not None
            and event.kind == "job"
            and event.job_id == self.job_id
        )


def stream_error(status: int, body: bytes) -> DynataskError:
    from .errors import error_from_response

    try:
        parsed: object = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return error_from_response(status, parsed)
