"""The worker: serves task types of a dynatask server from this process.

One asyncio core claims batches of tasks with long polls, reports each batch of outcomes
together with the next claim in one request (one transaction on the server), and renews the
leases of every attempt it holds in one batched heartbeat. Plain (``def``) handlers run on a
thread pool, ``async def`` handlers on the event loop. It behaves on the wire like the
TypeScript remote worker (src/engine/worker.ts over src/client/http-port.ts).

    worker = Worker("http://127.0.0.1:7077")

    @worker.task("resize", max_attempts=5, timeout=60)
    def resize(ctx: TaskContext, payload: Resize) -> dict[str, int]:
        ...

    worker.run()   # until SIGTERM or SIGINT, then drains
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import threading
import time
import traceback
import typing
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic
from pydantic_core import to_jsonable_python
from typing_extensions import TypedDict

from . import _wire as w
from ._transport import AsyncTransport
from .context import AsyncTaskContext, Attempt, Seconds, Suspend, TaskContext, to_ms
from .errors import ChildTaskFailedError, DynataskError, NonRetryableError, ValidationError

__all__ = ["Worker"]

log = logging.getLogger("dynatask.worker")

F = TypeVar("F", bound=Callable[..., Any])

MAX_TEXT = 100_000
"""Longest error message or stack sent (the server's bound)."""
REPORT_BYTES = 512 * 1024
"""Bytes of outcomes per report request: well within the server's default body limit."""
REPORT_RETRY_FOR = 120.0
"""How long outcomes whose report failed are tried again before their leases decide."""
DEFAULT_LEASE_MS = 30_000
BATCH_WAIT = 0.001
"""How long outcomes wait for plain handlers still running, to share their report."""
CANCEL_POLL = 1.0
"""While handlers run, heartbeats go at least this often: they also bring cancellations."""


@dataclass
class _Handler:
    type: str
    fn: Callable[..., Any]
    is_async: bool
    wants_payload: bool
    adapter: pydantic.TypeAdapter[Any] | None
    settings: w.TypeSettingsRequestType


@dataclass(eq=False)
class _Entry:
    """One attempt this worker holds, keyed by ``(task id, token)``."""

    attempt: Attempt
    handler: _Handler
    runner: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    started: bool = False
    done: bool = False
    aborted: str | None = None
    payload: Any = field(default=None)

    @property
    def key(self) -> tuple[str, int]:
        return (self.attempt.id, self.attempt.token)


def _payload_adapter(fn: Callable[..., Any]) -> tuple[bool, pydantic.TypeAdapter[Any] | None]:
    """Whether the handler takes a payload, and the validator its annotation declares (a
    dataclass, a pydantic model, a TypedDict...); none for ``dict``, ``Any`` or no annotation."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) < 2:
        return False, None
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    ann = hints.get(params[1].name, params[1].annotation)
    if isinstance(ann, str):
        raise ValidationError(
            f"handler {fn.__qualname__}: its payload annotation {ann!r} does not resolve "
            "(define the type at module level, or annotate the payload `dict[str, Any]`)"
        )
    if ann in (inspect.Parameter.empty, Any, object, dict) or typing.get_origin(ann) is dict:
        return True, None
    return True, pydantic.TypeAdapter(ann)


class _Outcome(TypedDict, total=False):
    result: Any
    error: w.ReportRequestFailedError
    suspended: bool


def _failed(a: Attempt, e: Exception) -> _Outcome:
    # An error raised after the run suspended (the handler caught Suspend...) changes nothing.
    return {"suspended": True} if a.suspended else {"error": task_error(e)}


def _succeeded(a: Attempt, result: Any) -> _Outcome:
    if a.suspended:
        return {"suspended": True}
    try:
        return {"result": to_jsonable_python(result)}
    except Exception as e:
        message = f"result of task {a.id} is not JSON-serialisable: {e}"
        return {"error": {"name": "InvalidResult", "message": message, "retryable": False}}


def _type_name(adapter: pydantic.TypeAdapter[Any]) -> str:
    t = adapter.core_schema.get("cls")
    return getattr(t, "__qualname__", None) or str(adapter).removeprefix("TypeAdapter")


def task_error(e: BaseException) -> w.ReportRequestFailedError:
    """What the server stores of an exception a handler raised."""
    out: w.ReportRequestFailedError = {
        "name": type(e).__name__[:200],
        "message": (str(e) or repr(e))[:MAX_TEXT],
        "stack": "".join(traceback.format_exception(type(e), e, e.__traceback__))[-MAX_TEXT:],
    }
    # A child's failure is final, and bad input to a ctx call is a bug in the handler: a re-run
    # would fail the same way (as in TypeScript).
    if isinstance(e, NonRetryableError | ChildTaskFailedError | ValidationError):
        out["retryable"] = False
    return out


class Worker:
    """Serves the task types registered with :meth:`task`.

    ``concurrency`` is the number of handlers running at once in this process (the thread
    pool's size too); a type's ``concurrency`` (in :meth:`task`) is a limit across every
    worker of the namespace, kept by the server. ``lease`` (seconds) is asked for with claims
    and heartbeats; by default the server's ``--lease-ms`` applies. On SIGTERM or SIGINT,
    :meth:`run` drains: it stops claiming, lets running handlers finish within ``grace``
    seconds, gives back what was claimed but not started, and tells the server it stopped.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        namespace: str = "default",
        concurrency: int = 16,
        lease: Seconds | None = None,
        grace: Seconds = 30.0,
        batch_size: int | None = None,
        long_poll: Seconds = 10.0,
        worker_id: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValidationError("concurrency must be 1 or more")
        self.url = url
        self.token = token
        self.namespace = namespace
        self.concurrency = concurrency
        self.batch_size = min(1000, batch_size or concurrency)
        self.lease_ms = None if lease is None else to_ms(lease, "lease")
        self.grace = to_ms(grace, "grace") / 1000
        self.long_poll_ms = min(30_000, to_ms(long_poll, "long_poll"))
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4()}"
        self._handlers: dict[str, _Handler] = {}
        self._running: dict[tuple[str, int], _Entry] = {}
        self._completed: list[tuple[_Entry, Any]] = []
        self._failed: list[tuple[_Entry, w.ReportRequestFailedError]] = []
        self._granted_lease_ms: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: AsyncTransport | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._poll: asyncio.Task[list[w.ClaimedTask]] | None = None
        self._side_flush: asyncio.Task[None] | None = None
        self._outcomes_lock = threading.Lock()
        self._thread_outcomes: list[tuple[_Entry, _Outcome]] = []
        self._collecting = False
        self._flush_lock: asyncio.Lock | None = None
        self._started = False
        self._stop_requested = False
        self.ready = False
        """True once the worker has registered its types and claims."""

    # ------------------------------------------------------------------ registration

    def task(
        self,
        type: str,
        *,
        concurrency: int | None = None,
        max_attempts: int | None = None,
        backoff: Seconds | None = None,
        max_backoff: Seconds | None = None,
        timeout: Seconds | None = None,
    ) -> Callable[[F], F]:
        """Registers the decorated function as the handler of ``type``.

        The handler takes ``(ctx, payload)`` (or only ``ctx``): a :class:`TaskContext` for a
        plain function, an :class:`AsyncTaskContext` for an ``async def``. The payload arrives
        as JSON (a dict...), or validated into what its annotation declares (a dataclass, a
        pydantic model...); a payload that does not validate fails the task without retries.
        What it returns (JSON, a dataclass or a model) is the task's result; what it raises
        fails the attempt (:class:`~dynatask.NonRetryableError`: no further attempts).

        The settings are the type's, shared by every worker of the namespace (the last
        registration holds): ``concurrency`` (tasks of the type running at once across all
        workers), ``max_attempts``, ``backoff`` and ``max_backoff`` (seconds), and ``timeout``
        (seconds per attempt).
        """
        if self._started:
            raise ValidationError("task(): register handlers before the worker starts")
        if not isinstance(type, str) or not type:
            raise ValidationError("task type must be a non-empty string")
        settings: w.TypeSettingsRequestType = {"type": type}
        if concurrency is not None:
            settings["concurrency"] = concurrency
        if max_attempts is not None:
            settings["maxAttempts"] = max_attempts
        if backoff is not None:
            settings["backoffMs"] = to_ms(backoff, "backoff")
        if max_backoff is not None:
            settings["maxBackoffMs"] = to_ms(max_backoff, "max_backoff")
        if timeout is not None:
            settings["timeoutMs"] = to_ms(timeout, "timeout")

        def register(fn: F) -> F:
            wants, adapter = _payload_adapter(fn)
            self._handlers[type] = _Handler(
                type, fn, inspect.iscoroutinefunction(fn), wants, adapter, settings
            )
            return fn

        return register

    @property
    def types(self) -> list[str]:
        return list(self._handlers)

    @property
    def busy(self) -> int:
        """Attempts this worker holds now."""
        return len(self._running)

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        """Serves until SIGTERM or SIGINT (or :meth:`stop`), then drains. Blocking."""
        asyncio.run(self.serve())

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Serves on the running event loop until :meth:`stop` (or, with ``handle_signals``
        in the main thread, SIGTERM or SIGINT), then drains."""
        if self._started:
            raise RuntimeError("the worker is already serving")
        if not self._handlers:
            raise ValidationError("no handlers: register some with @worker.task(type)")
        self._started = True
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._transport = AsyncTransport(self.url, token=self.token)
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="dynatask")
        signals: list[signal.Signals] = []
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(ValueError, NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    signals.append(sig)
        if self._stop_requested:
            self._stopping.set()
        heartbeat = loop.create_task(self._heartbeat_loop())
        try:
            types: w.TypeSettingsRequest = {
                "namespace": self.namespace,
                "types": [h.settings for h in self._handlers.values()],
            }
            # Until the server answers (the transport tries for a while), a stop still stops.
            register = loop.create_task(self._transport.call("POST", "/v1/worker/types", types))
            stopped = loop.create_task(self._stopping.wait())
            await asyncio.wait({register, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not register.done():
                register.cancel()
                return
            register.result()
            self.ready = True
            await self._claim_loop()
            await self._drain()
        finally:
            heartbeat.cancel()
            for sig in signals:
                loop.remove_signal_handler(sig)
            stop: w.WorkerStopRequest = {"workerId": self.worker_id}
            with contextlib.suppress(Exception):
                await self._transport.call(
                    "POST",
                    "/v1/worker/stop",
                    stop,
                    retry_for=2.0,
                    timeout=2.0,
                )
            await self._transport.aclose()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self.ready = False

    def stop(self) -> None:
        """Asks the worker to drain and return from :meth:`run`/:meth:`serve`. Thread-safe."""
        self._stop_requested = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._begin_stop()
        else:
            loop.call_soon_threadsafe(self._begin_stop)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping is not None and self._stopping.is_set():
            log.warning("%s again: stopping now, without waiting for handlers", sig.name)
            self.grace = 0.0
            assert self._wake is not None
            self._wake.set()
            return
        log.info("%s: draining (grace %.1f s)", sig.name, self.grace)
        self._begin_stop()

    def _begin_stop(self) -> None:
        assert self._stopping is not None
        assert self._wake is not None
        self._stopping.set()
        if self._poll is not None:
            # Closing the long poll's request: the server releases a claim whose client hung up.
            self._poll.cancel()
        self._wake.set()

    @property
    def _lease(self) -> int:
        return self.lease_ms or self._granted_lease_ms or DEFAULT_LEASE_MS

    def _claim_body(self, limit: int) -> w.ReportRequestClaim:
        body: w.ReportRequestClaim = {
            "namespace": self.namespace,
            "types": self.types,
            "limit": min(limit, 1000),
            "workerId": self.worker_id,
            # Repeated by the transport after a lost answer, it gets the same tasks back.
            "claimId": str(uuid.uuid4()),
        }
        if self.lease_ms is not None:
            body["leaseMs"] = self.lease_ms
        return body

    def _threads_busy(self) -> bool:
        """Whether some plain handler is running beside the outcomes waiting to be reported."""
        waiting = len(self._completed) + len(self._failed)
        return len(self._running) > waiting and any(
            not e.done and not e.handler.is_async for e in self._running.values()
        )

    def _want(self) -> int:
        return min(self.concurrency - len(self._running), self.batch_size)

    async def _claim_loop(self) -> None:
        assert self._stopping is not None
        assert self._wake is not None
        assert self._transport
        failures = 0
        while not self._stopping.is_set():
            want = self._want()
            if self._completed or self._failed:
                if self._threads_busy():
                    # Plain handlers finish one by one on their threads: a millisecond lets
                    # those about to finish join this batch (fewer, fuller round trips).
                    await asyncio.sleep(BATCH_WAIT)
                # Outcomes and the next claim in one round trip: freed slots refill at once.
                await self._flush(claim=True)
                continue
            if want <= 0:
                await self._wake.wait()
                self._wake.clear()
                # Let every handler finishing in this turn join the batch.
                await asyncio.sleep(0)
                continue
            body: w.ClaimRequest = {**self._claim_body(want), "waitMs": self.long_poll_ms}
            self._poll = asyncio.ensure_future(self._post_claim(body))
            try:
                tasks = await self._poll
                failures = 0
            except asyncio.CancelledError:
                if self._stopping.is_set():
                    break
                raise
            except Exception as e:
                failures += 1
                log.error("dynatask worker: claim failed: %s", e)
                if isinstance(e, DynataskError) and 400 <= e.status < 500 and e.status != 408:
                    raise
                await self._sleep_or_stop(min(5.0, 0.1 * 2**failures))
                continue
            finally:
                self._poll = None
            self._start(tasks)

    async def _post_claim(self, body: w.ClaimRequest) -> list[w.ClaimedTask]:
        assert self._transport is not None
        r: w.ClaimResult = await self._transport.call("POST", "/v1/worker/claim", body)
        return r["tasks"]

    async def _sleep_or_stop(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _note_lease(self, tasks: list[w.ClaimedTask]) -> None:
        if tasks:
            t = tasks[0]
            started, expires = t.get("startedAt"), t.get("leaseExpiresAt")
            if isinstance(started, int) and isinstance(expires, int) and expires > started:
                self._granted_lease_ms = expires - started

    def _start(self, tasks: list[w.ClaimedTask]) -> None:
        assert self._stopping is not None
        assert self._loop is not None
        assert self._transport
        self._note_lease(tasks)
        if self._stopping.is_set():
            if tasks:
                self._loop.create_task(
                    self._release([(str(t["id"]), int(t["token"])) for t in tasks])
                )
            return
        for t in tasks:
            handler = self._handlers.get(str(t["type"]))
            attempt = Attempt(self._transport, self._loop, t, self.lease_ms, self._on_status)
            if handler is None:  # not one of ours: give it back
                self._loop.create_task(self._release([(attempt.id, attempt.token)]))
                continue
            entry = _Entry(attempt, handler)
            self._running[entry.key] = entry
            timeout_ms = t.get("timeoutMs")
            if isinstance(timeout_ms, int):
                entry.timer = self._loop.call_later(timeout_ms / 1000, self._timed_out, entry)
            adapter = handler.adapter
            try:
                entry.payload = (
                    attempt.payload if adapter is None else adapter.validate_python(attempt.payload)
                )
            except pydantic.ValidationError as e:
                assert adapter is not None
                what = f"the payload of {handler.type} task {attempt.id}"
                what += f" is no {_type_name(adapter)}"
                self._finish(
                    entry,
                    error={
                        "name": "PayloadValidationError",
                        "message": f"{what}: {e}"[:MAX_TEXT],
                        "retryable": False,
                    },
                )
                continue
            if handler.is_async:
                entry.runner = self._loop.create_task(self._run(entry))
            else:
                assert self._executor is not None
                self._executor.submit(self._run_in_thread, entry)

    async def _run(self, entry: _Entry) -> None:
        """An ``async def`` handler's run, as a task on the loop."""
        h = entry.handler
        a = entry.attempt
        try:
            entry.started = True
            ctx = AsyncTaskContext(a)
            result = await (h.fn(ctx, entry.payload) if h.wants_payload else h.fn(ctx))
        except Suspend:
            self._finish(entry, suspended=True)
        except asyncio.CancelledError:
            # Aborted (cancelled, timed out, lease lost, the grace is over): nothing to report.
            self._finish(entry, suspended=a.suspended)
        except Exception as e:
            self._finish(entry, **_failed(a, e))
        else:
            self._finish(entry, **_succeeded(a, result))

    def _run_in_thread(self, entry: _Entry) -> None:
        """A plain handler's run, on a thread of the pool. Its outcome goes back to the loop
        through a queue that the loop empties in one callback for every outcome ready then,
        not in one wake-up of the loop per task."""
        a = entry.attempt
        outcome: _Outcome
        with self._outcomes_lock:
            # Under the lock a drain reads it with: a task it gives back never starts here.
            run = entry.aborted is None
            entry.started = run
        if not run:
            outcome = {"suspended": a.suspended}
        else:
            h = entry.handler
            ctx = TaskContext(a)
            try:
                result = h.fn(ctx, entry.payload) if h.wants_payload else h.fn(ctx)
            except Suspend:
                outcome = {"suspended": True}
            except Exception as e:
                outcome = _failed(a, e)
            else:
                outcome = _succeeded(a, result)
        with self._outcomes_lock:
            self._thread_outcomes.append((entry, outcome))
            if self._collecting:
                return
            self._collecting = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._collect)

    def _collect(self) -> None:
        with self._outcomes_lock:
            ready, self._thread_outcomes = self._thread_outcomes, []
            self._collecting = False
        for entry, outcome in ready:
            self._finish(entry, **outcome)

    def _on_status(self, attempt: Attempt, status: str) -> None:
        # A heartbeat's answer other than "ok", from a ctx.heartbeat() on the loop.
        entry = self._running.get((attempt.id, attempt.token))
        if entry is not None:
            self._abort(entry, status)

    def _abort(self, entry: _Entry, why: str) -> None:
        """Ends one attempt here: cancelled, lease lost, timed out, or the grace is over."""
        if entry.aborted is not None:
            return
        entry.aborted = why
        entry.attempt.abort()
        if entry.handler.is_async and entry.runner is not None:
            entry.runner.cancel()

    def _timed_out(self, entry: _Entry) -> None:
        if entry.done:
            return
        timeout = entry.attempt
        self._abort(entry, "timeout")
        err = TimeoutError(f"attempt {timeout.attempt} of task {timeout.id} timed out")
        self._finish(entry, error={"name": "TimeoutError", "message": str(err)})

    def _finish(
        self,
        entry: _Entry,
        *,
        result: Any = None,
        error: w.ReportRequestFailedError | None = None,
        suspended: bool = False,
    ) -> None:
        assert self._wake is not None
        if entry.done:
            return
        entry.done = True
        if entry.timer is not None:
            entry.timer.cancel()
        if suspended or (entry.aborted is not None and entry.aborted != "timeout"):
            # Suspended, or the server rejects this attempt's outcome anyway.
            self._running.pop(entry.key, None)
        elif error is not None:
            self._failed.append((entry, error))
        else:
            self._completed.append((entry, result))
        self._wake.set()
        # A long poll is in flight (no work was ready): outcomes go without a claim, and work
        # they make ready answers that poll.
        flushing = self._side_flush is not None and not self._side_flush.done()
        if self._poll is not None and (self._completed or self._failed) and not flushing:
            assert self._loop is not None
            self._side_flush = self._loop.create_task(self._flush_beside_poll())

    async def _flush_beside_poll(self) -> None:
        # Outcomes that finish while this report is under way go in the next one, as long as
        # the poll lasts (after it, the claim loop reports them with its next claim).
        while self._poll is not None and (self._completed or self._failed):
            await self._flush(claim=False)

    async def _flush(self, claim: bool) -> None:
        assert self._flush_lock is not None
        async with self._flush_lock:
            await asyncio.sleep(0)  # outcomes of this turn join the batch
            completed, failed = self._completed, self._failed
            self._completed, self._failed = [], []
            if not completed and not failed:
                return
            # The slots these outcomes free count: they are refilled in the same round trip.
            free = self.concurrency - len(self._running) + len(completed) + len(failed)
            want = min(free, self.batch_size) if claim and self._poll is None else 0
            await self._report(completed, failed, want)

    async def _report(
        self,
        completed: list[tuple[_Entry, Any]],
        failed: list[tuple[_Entry, w.ReportRequestFailedError]],
        claim: int,
    ) -> None:
        assert self._transport is not None
        assert self._stopping is not None
        # Within the server's limits (1000 items a list, its body limit): a big batch goes in
        # several requests, the claim with the last.
        chunks: list[w.ReportRequest] = [{"completed": [], "failed": []}]
        size = 0
        count = 0

        def room(n: int) -> w.ReportRequest:
            nonlocal size, count
            if count >= 1000 or (count and size + n > REPORT_BYTES):
                chunks.append({"completed": [], "failed": []})
                size = count = 0
            size += n
            count += 1
            return chunks[-1]

        for e, result in completed:
            done: w.ReportRequestCompleted = {**e.attempt.ref, "result": result}
            room(len(str(result))).setdefault("completed", []).append(done)
        for e, err in failed:
            fail: w.ReportRequestFailed = {**e.attempt.ref, "error": err}
            room(len(str(err))).setdefault("failed", []).append(fail)
        since = time.monotonic()
        tries = 0
        for i, body in enumerate(chunks):
            refs = [(c["id"], c["token"]) for c in body.get("completed", [])]
            refs += [(f["id"], f["token"]) for f in body.get("failed", [])]
            if not body.get("failed"):
                body.pop("failed", None)
            last = i == len(chunks) - 1
            if last and claim > 0 and not self._stopping.is_set():
                body["claim"] = self._claim_body(claim)
            while True:
                try:
                    r: w.ReportResult = await self._transport.call(
                        "POST", "/v1/worker/report", body
                    )
                    break
                except DynataskError as e:
                    retry = e.status == 0 or e.status >= 500 or e.status in (408, 429)
                    if not retry or time.monotonic() - since > REPORT_RETRY_FOR:
                        log.error(
                            "dynatask worker: outcomes not stored (%s); their leases decide", e
                        )
                        r = {"completed": [], "failed": [], "tasks": []}
                        break
                    log.warning("dynatask worker: report failed, trying again: %s", e)
                    tries += 1
                    await asyncio.sleep(min(5.0, 0.1 * 2**tries))
                    body.pop("claim", None)
            for ref in refs:
                self._running.pop(ref, None)
            if refs and self._wake is not None:
                # A drain waiting for these attempts to end learns of it now, not at its grace.
                self._wake.set()
            self._start(r["tasks"])

    async def _release(self, refs: list[tuple[str, int]]) -> None:
        assert self._transport is not None
        for i in range(0, len(refs), 1000):
            body: w.ReleaseRequest = {
                "items": [{"id": t, "token": k} for t, k in refs[i : i + 1000]]
            }
            try:
                await self._transport.call("POST", "/v1/worker/release", body)
            except Exception as e:
                log.error("dynatask worker: release failed (their leases decide): %s", e)

    async def _heartbeat_loop(self) -> None:
        while True:
            lease = self._lease
            await asyncio.sleep(max(0.05, min(lease / 3000, CANCEL_POLL)))
            entries = list(self._running.values())
            if not entries:
                continue
            body: w.HeartbeatRequest = {"items": [e.attempt.ref for e in entries]}
            if self.lease_ms is not None:
                body["leaseMs"] = self.lease_ms
            try:
                assert self._transport is not None
                r: w.HeartbeatResult = await self._transport.call(
                    "POST", "/v1/worker/heartbeat", body, retry_for=lease / 3000
                )
            except Exception as e:
                log.error("dynatask worker: heartbeat failed: %s", e)
                continue
            # Each answer is about the attempt it was asked for, never a later one of the task.
            for entry, status in zip(entries, r["items"], strict=False):
                if status != "ok":
                    self._abort(entry, str(status))

    async def _drain(self) -> None:
        """Stopping: no more claims; running handlers get ``grace`` seconds to finish and
        their outcomes are reported; what never started is given back."""
        assert self._wake is not None
        assert self._loop is not None
        with self._outcomes_lock:
            unstarted = [e for e in self._running.values() if not e.started and not e.done]
            for e in unstarted:
                e.aborted = "released"
        for e in unstarted:
            e.attempt.abort()
            if e.runner is not None:
                e.runner.cancel()
            self._running.pop(e.key, None)
        if unstarted:
            await self._release([e.key for e in unstarted])
        deadline = time.monotonic() + self.grace
        while self._running or self._completed or self._failed:
            if self._completed or self._failed:
                await self._flush(claim=False)
                continue
            left = deadline - time.monotonic()
            if left <= 0 or self.grace <= 0:
                break
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
        late = [e for e in self._running.values() if not e.done]
        for e in late:
            # Failed (retryably) rather than left to their leases: retried sooner elsewhere.
            self._abort(e, "grace")
            e.done = True
            if e.timer is not None:
                e.timer.cancel()
            self._failed.append(
                (
                    e,
                    {
                        "name": "WorkerStopped",
                        "message": f"the worker stopped before the handler finished "
                        f"(grace {self.grace:g} s)",
                    },
                )
            )
        if self._failed or self._completed:
            await self._flush(claim=False)
        if late:
            log.warning("dynatask worker: %d handlers still running after the grace", len(late))

    def __repr__(self) -> str:
        return f"<Worker {self.namespace} {sorted(self._handlers)} busy={self.busy}>"
