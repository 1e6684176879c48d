"""The synchronous client: submit jobs, read them and their task trees, wait for results,
cancel, retry, and follow events. :class:`dynatask.AsyncClient` is the asyncio flavour.

Every call is safe to repeat (the protocol is idempotent: a submission carries a job id chosen
here), so connection errors and 503 answers are retried with backoff for ``retry_for`` seconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, cast

import httpx
import httpx_sse

from . import _requests as rq
from . import _wire
from ._convert import Duration, Instant
from ._transport import Transport, _backoff
from .errors import DynataskError, PayloadTooLargeError, UnreachableError
from .models import (
    Event,
    EventKind,
    Job,
    JobInfo,
    JobSpec,
    JobState,
    JobSummary,
    Page,
    TaskInfo,
    TypeInfo,
)

__all__ = ["Client"]

_STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)  # the server comments every 15 s


class Client:
    """A client of a dynatask server.

    ``url`` defaults to ``$DYNATASK_URL`` (or an http(s) ``$DYNATASK_DATABASE_URL``, else
    ``http://127.0.0.1:7077``) and ``token`` to ``$DYNATASK_TOKEN``. Jobs are submitted to and
    listed from ``namespace`` unless a call names another. Use it as a context manager, or
    call :meth:`close`. A client is safe to share between threads.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        namespace: str = "default",
        retry_for: float = 30.0,
        timeout: float = 70.0,
    ) -> None:
        self.transport = Transport(url, token=token, retry_for=retry_for, timeout=timeout)
        self.namespace = namespace

    @property
    def url(self) -> str:
        return self.transport.url

    # -- submitting -------------------------------------------------------------------------

    def submit(
        self,
        type: str,
        payload: Any = None,
        *,
        job_id: str | uuid.UUID | None = None,
        namespace: str | None = None,
        priority: int | None = None,
        run_at: Instant | None = None,
        delay: Duration | None = None,
        max_attempts: int | None = None,
        backoff: Duration | None = None,
        max_backoff: Duration | None = None,
        timeout: Duration | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
    ) -> Job:
        """Submits a job whose root task is ``type`` with ``payload`` (JSON data, a dataclass
        or a pydantic model).

        ``job_id`` (a UUID; one is made here otherwise) makes the submission idempotent: a
        repeat returns the existing job with ``created=False``. Durations are seconds (or
        timedeltas): ``delay`` before it may run, ``backoff``/``max_backoff`` of its retries,
        ``timeout`` per attempt; ``run_at`` an aware datetime or epoch seconds; at most
        ``concurrency_limit`` tasks with ``concurrency_key`` run at once.
        """
        spec = JobSpec(
            type=type,
            payload=payload,
            job_id=None if job_id is None else str(job_id),
            namespace=namespace,
            priority=priority,
            run_at=run_at,
            delay=delay,
            max_attempts=max_attempts,
            backoff=backoff,
            max_backoff=max_backoff,
            timeout=timeout,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
        )
        return self.submit_many([spec])[0]

    def submit_many(self, jobs: Iterable[JobSpec]) -> list[Job]:
        """Submits many jobs (in requests of up to 1000), in order; each is idempotent by its
        job id (one is made here for a spec without). A request over the server's body limit
        is split in halves and sent again (safe: the job ids are chosen already)."""
        items = rq.submit_items(jobs, self.namespace)
        out: list[Job] = []
        for body in rq.batches(items):
            out.extend(self._submit(body["jobs"]))
        return out

    def _submit(self, items: list[_wire.SubmitRequestJob]) -> list[Job]:
        try:
            return rq.jobs_of(self.transport.call("POST", "/v1/jobs", {"jobs": items}))
        except PayloadTooLargeError:
            if len(items) < 2:
                raise
            half = len(items) // 2
            return [*(self._submit(items[:half])), *(self._submit(items[half:]))]

    # -- reading ----------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobInfo:
        """The job, with its result or error and its tasks counted by state."""
        data = self.transport.call("GET", f"/v1/jobs/{rq.seg(job_id)}")
        return JobInfo.from_wire(cast(_wire.JobInfo, data))

    def wait_for_job(self, job_id: str, timeout: float | None = None) -> JobInfo:
        """Waits until the job settles and returns it (raises :class:`TimeoutError` after
        ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = rq.WAIT_FIRST
        while True:
            info = self.get_job(job_id)
            if info.settled:
                return info
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job_id} has not settled after {timeout} s")
                delay = min(delay, left)
            time.sleep(delay)
            delay = rq.next_wait(delay)

    def wait_for_result(self, job_id: str, timeout: float | None = None) -> Any:
        """Waits until the job settles; returns its result, or raises :class:`TaskFailedError`
        (with the root task's ``error``) when it failed or was cancelled."""
        return rq.result_of(self.wait_for_job(job_id, timeout))

    def list_jobs(
        self,
        *,
        state: JobState | None = None,
        type: str | None = None,
        namespace: str | None = None,
        created_after: Instant | None = None,
        created_before: Instant | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[JobSummary]:
        """One page of the namespace's jobs, newest first; ``cursor`` is an earlier page's
        ``next``."""
        params = rq.list_params(
            namespace=namespace or self.namespace,
            state=state,
            type=type,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
        )
        data = cast(_wire.JobPage, self.transport.call("GET", "/v1/jobs", params=params))
        return Page([JobSummary.from_wire(j) for j in data["jobs"]], data["next"])

    def iter_jobs(
        self,
        *,
        state: JobState | None = None,
        type: str | None = None,
        namespace: str | None = None,
        created_after: Instant | None = None,
        created_before: Instant | None = None,
        page_size: int = 100,
    ) -> Iterator[JobSummary]:
        """Every job that matches, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.list_jobs(
                state=state,
                type=type,
                namespace=namespace,
                created_after=created_after,
                created_before=created_before,
                limit=page_size,
                cursor=cursor,
            )
            yield from page
            if page.next is None:
                return
            cursor = page.next

    def tree(
        self, job_id: str, *, after: str | None = None, limit: int | None = None
    ) -> Page[TaskInfo]:
        """One page of the job's tasks, in creation order (the root first); ``after`` is an
        earlier page's ``next``."""
        data = cast(
            _wire.TaskPage,
            self.transport.call(
                "GET", f"/v1/jobs/{rq.seg(job_id)}/tasks", params={"after": after, "limit": limit}
            ),
        )
        return Page([TaskInfo.from_wire(t) for t in data["tasks"]], data["next"])

    def iter_tree(self, job_id: str, *, page_size: int = 1000) -> Iterator[TaskInfo]:
        """Every task of the job, in creation order, page after page."""
        after: str | None = None
        while True:
            page = self.tree(job_id, after=after, limit=page_size)
            yield from page
            if page.next is None:
                return
            after = page.next

    def get_task(self, task_id: str) -> TaskInfo:
        """The task, with its failed ``attempts``."""
        data = self.transport.call("GET", f"/v1/tasks/{rq.seg(task_id)}")
        return TaskInfo.from_wire(cast(_wire.TaskInfo, data))

    def types(self, namespace: str | None = None) -> list[TypeInfo]:
        """The namespace's task types: queued tasks, and whether a live worker serves each."""
        data = cast(
            _wire.TypeList,
            self.transport.call(
                "GET", "/v1/types", params={"namespace": namespace or self.namespace}
            ),
        )
        return [TypeInfo.from_wire(t) for t in data["types"]]

    # -- control ----------------------------------------------------------------------------

    def cancel_job(self, job_id: str, reason: str | None = None) -> bool:
        """Cancels the job's unsettled tasks; false when it had settled already."""
        data = self.transport.call(
            "POST", f"/v1/jobs/{rq.seg(job_id)}/cancel", rq.cancel_body(reason)
        )
        return bool(cast(_wire.CancelResult, data)["cancelled"])

    def cancel_task(self, task_id: str, reason: str | None = None) -> bool:
        """Cancels the task and its subtree; false when it had settled already."""
        data = self.transport.call(
            "POST", f"/v1/tasks/{rq.seg(task_id)}/cancel", rq.cancel_body(reason)
        )
        return bool(cast(_wire.CancelResult, data)["cancelled"])

    def retry_task(self, task_id: str, attempt: int | None = None) -> bool:
        """Runs a failed task again (its job runs again too).

        ``attempt`` is the failed attempt to retry; by default the task's current one is read
        first, so that repeating the call after a lost answer retries it once only. Raises
        :class:`ConflictError` when the task has not failed.
        """
        if attempt is None:
            task = self.get_task(task_id)
            attempt = task.attempt if task.state == "failed" else None
        body: _wire.RetryRequest = {} if attempt is None else {"attempt": attempt}
        data = self.transport.call("POST", f"/v1/tasks/{rq.seg(task_id)}/retry", body)
        return bool(cast(_wire.RetryResult, data)["retried"])

    # -- events -----------------------------------------------------------------------------

    def events(
        self,
        job_id: str | None = None,
        *,
        kinds: Iterable[EventKind] | None = None,
        until_settled: bool = True,
    ) -> Iterator[Event]:
        """Follows the server's events (Server-Sent Events): of one job, or of all jobs.

        ``kinds`` chooses among ``"task"``, ``"progress"`` and ``"job"`` (all by default; a
        client that only waits for jobs to settle should ask for ``["job"]``, which costs the
        server nothing). A job's stream ends after the job's ``job`` event (it settled) unless
        ``until_settled`` is false (or ``kinds`` leaves ``"job"`` out); a stream of a settled
        job starts with that event. A dropped
        connection is opened again (within ``retry_for``): events meanwhile are missed, so
        treat the stream as a prompt to read the job, not as a log. Close the generator (or
        leave the loop) to stop.
        """
        path = rq.events_path(job_id)
        params = rq.events_params(kinds)
        end = rq.StreamEnd(job_id, until_settled)
        transport = self.transport
        deadline = time.monotonic() + transport.retry_for
        attempt = 0
        while True:
            try:
                with httpx_sse.connect_sse(
                    transport.http,
                    "GET",
                    path,
                    params=params,
                    headers={"accept": "text/event-stream"},
                    timeout=_STREAM_TIMEOUT,
                ) as source:
                    res = source.response
                    if res.status_code >= 400:
                        raise rq.stream_error(res.status_code, res.read())
                    attempt = 0
                    for sse in source.iter_sse():
                        deadline = time.monotonic() + transport.retry_for
                        event = rq.parse_event(sse.data, sse.id)
                        if event is None:
                            continue
                        yield event
                        if end.done(event):
                            return
            except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.TimeoutException) as e:
                if time.monotonic() >= deadline:
                    raise UnreachableError(
                        f"cannot reach the dynatask server at {transport.url}: {e}",
                        code="unreachable",
                    ) from e
            except DynataskError as e:
                if e.status != 503 or time.monotonic() >= deadline:
                    raise
            # The stream ended (the server drains) or broke: open it again.
            time.sleep(_backoff(attempt))
            attempt += 1

    # -- lifecycle --------------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether the server answers and its database does (``/readyz``), without retries."""
        try:
            self.transport.call("GET", "/readyz", retry=False, timeout=5.0)
        except DynataskError:
            return False
        return True

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
