"""What a handler sees: its task, and the calls that spawn children, wait for them durably,
memoise steps and report progress.

The execution model is the TypeScript SDK's (src/engine/context.ts): a handler that waits for
unsettled children is suspended (its worker slot is freed) and later runs again from the top.
Spawns are idempotent by key, and a child without a key gets ``#0``, ``#1``, ... in the order
of the spawns that succeed in this run of the handler, so the re-run gets the same children
back; work that must not repeat goes in :meth:`TaskContext.step`.

:class:`TaskContext` is the context of a plain (``def``) handler, which runs on a worker
thread: its calls block. :class:`AsyncTaskContext` is that of an ``async def`` handler, which
runs on the worker's event loop: its calls are coroutines.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast, overload

from pydantic_core import to_jsonable_python

from . import _wire as w
from ._transport import AsyncTransport
from .errors import ChildTaskFailedError, StaleAttemptError, ValidationError, error_from_item
from .outcome import Outcome

__all__ = ["AsyncTaskContext", "Child", "TaskContext", "TaskHandle"]

T = TypeVar("T")

Seconds = float | timedelta
"""A duration: seconds (``float``) or a :class:`~datetime.timedelta`."""


def to_ms(value: Seconds, what: str) -> int:
    """A duration in whole milliseconds, as the wire takes it."""
    s = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(s, bool) or not isinstance(s, int | float) or s < 0:
        raise ValidationError(f"{what} must be a duration of 0 seconds or more, got {value!r}")
    return round(s * 1000)


@dataclass(frozen=True)
class TaskHandle:
    """A spawned child: ``created`` is false when the spawn found it already there."""

    id: str
    type: str
    key: str
    created: bool
    parent_id: str | None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> TaskHandle:
        parent = data.get("parentId")
        return cls(
            id=str(data["id"]),
            type=str(data["type"]),
            key=str(data["key"]),
            created=bool(data["created"]),
            parent_id=None if parent is None else str(parent),
        )


@dataclass(frozen=True)
class Child:
    """A child to spawn with :meth:`TaskContext.spawn_many`.

    Durations are seconds (or timedeltas). ``after`` names tasks of the job (handles or ids) or
    sibling spawn keys this child waits for; with ``ignore_failure`` a permanent failure of the
    child does not fail its parent; ``run_regardless`` runs it once its dependencies have
    settled, whatever their outcome. Without ``key``, children get ``#0``, ``#1``, ...
    """

    type: str
    payload: Any = None
    key: str | None = None
    dedup_key: str | None = None
    after: Sequence[str | TaskHandle] | None = None
    priority: int | None = None
    delay: Seconds | None = None
    max_attempts: int | None = None
    backoff: Seconds | None = None
    max_backoff: Seconds | None = None
    timeout: Seconds | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    ignore_failure: bool = False
    run_regardless: bool = False

    def wire(self, key: str, where: str) -> w.SpawnRequestItemChildren:
        """The child as ``/v1/worker/spawn`` takes it, under spawn key ``key``."""
        if not isinstance(self.type, str) or not self.type:
            raise ValidationError(f"{where}.type must be a non-empty string")
        o: w.SpawnOptions = {"key": key}
        if self.dedup_key is not None:
            o["dedupKey"] = self.dedup_key
        if self.after is not None:
            o["after"] = [a.id if isinstance(a, TaskHandle) else a for a in self.after]
        if self.priority is not None:
            o["priority"] = self.priority
        if self.delay is not None:
            o["delayMs"] = to_ms(self.delay, f"{where}.delay")
        if self.max_attempts is not None:
            o["maxAttempts"] = self.max_attempts
        if self.backoff is not None:
            o["backoffMs"] = to_ms(self.backoff, f"{where}.backoff")
        if self.max_backoff is not None:
            o["maxBackoffMs"] = to_ms(self.max_backoff, f"{where}.max_backoff")
        if self.timeout is not None:
            o["timeoutMs"] = to_ms(self.timeout, f"{where}.timeout")
        if (self.concurrency_key is None) != (self.concurrency_limit is None):
            raise ValidationError(f"{where}: concurrency_key and concurrency_limit go together")
        if self.concurrency_key is not None and self.concurrency_limit is not None:
            o["concurrency"] = {"key": self.concurrency_key, "limit": self.concurrency_limit}
        if self.ignore_failure:
            o["ignoreFailure"] = True
        if self.run_regardless:
            o["runRegardless"] = True
        out: w.SpawnRequestItemChildren = {"type": self.type, "options": o}
        if self.payload is not None:
            out["payload"] = to_jsonable_python(self.payload)
        return out


class Suspend(BaseException):
    """Raised by a durable wait whose children are unsettled: the handler's run ends here and
    it runs again from the top once they have settled. A ``BaseException``, so that a handler's
    ``except Exception`` does not swallow it; the worker catches it."""

    def __init__(self) -> None:
        super().__init__(
            "task suspended in a durable wait; it resumes when the awaited children settle"
        )


_EVENTS = threading.Lock()

SPAWN_CHILDREN = 5000
"""Children per spawn request (the server takes 10,000), as the TypeScript client sends."""
WAIT_IDS = 20_000
"""Children named per wait request."""


class Attempt:
    """One attempt of a task as the worker holds it: its token, its spawn numbering, whether
    it was aborted; the protocol calls every context makes, as coroutines on the worker's
    loop."""

    def __init__(
        self,
        transport: AsyncTransport,
        loop: asyncio.AbstractEventLoop,
        task: w.ClaimedTask,
        lease_ms: int | None,
        on_status: Callable[[Attempt, str], None],
    ) -> None:
        self.transport = transport
        self.loop = loop
        self.id: str = str(task["id"])
        self.job_id: str = str(task["jobId"])
        parent = task.get("parentId")
        self.parent_id: str | None = None if parent is None else str(parent)
        self.type: str = str(task["type"])
        self.attempt: int = int(task["attempt"])
        self.token: int = int(task["token"])
        self.payload: Any = task.get("payload")
        self.lease_ms = lease_ms
        self.on_status = on_status
        self._cancelled: threading.Event | None = None
        self.aborted = False
        self.suspended = False
        self._next_seq = 0
        self._free_seqs: list[int] = []

    @property
    def cancelled(self) -> threading.Event:
        """Made when first asked for: most handlers never look, and an Event per task costs."""
        with _EVENTS:
            if self._cancelled is None:
                self._cancelled = threading.Event()
                if self.aborted:
                    self._cancelled.set()
            return self._cancelled

    def abort(self) -> None:
        with _EVENTS:
            self.aborted = True
            if self._cancelled is not None:
                self._cancelled.set()

    @property
    def ref(self) -> w.HeartbeatRequestItem:
        """``{id, token}``: the attempt, as every worker call names it."""
        return {"id": self.id, "token": self.token}

    def check(self) -> None:
        if self.suspended:
            raise Suspend()

    def _keys(self, children: Sequence[Child]) -> tuple[list[str], list[int]]:
        # Runs on the loop's thread, so the numbers follow the order of the calls.
        for i, c in enumerate(children):
            k = c.key
            if k is not None and (not isinstance(k, str) or k == "" or k.startswith("#")):
                raise ValidationError(
                    f"children[{i}].key must be a non-empty string not starting with '#'",
                    field=f"/children/{i}/key",
                )
        seqs: list[int] = []
        keys: list[str] = []
        for c in children:
            if c.key is not None:
                keys.append(c.key)
                continue
            if self._free_seqs:
                n = self._free_seqs.pop(0)
            else:
                n = self._next_seq
                self._next_seq += 1
            seqs.append(n)
            keys.append(f"#{n}")
        return keys, seqs

    async def spawn(self, children: Sequence[Child]) -> list[TaskHandle]:
        self.check()
        keys, seqs = self._keys(children)
        handles: list[TaskHandle] = []
        try:
            wire = [c.wire(keys[i], f"children[{i}]") for i, c in enumerate(children)]
            # Usually one request, one transaction. More children than one request may carry
            # go in several, in order: safe, as each child's key makes it idempotent.
            for i in range(0, max(1, len(wire)), SPAWN_CHILDREN):
                body: w.SpawnRequest = {
                    "items": [
                        {
                            "id": self.id,
                            "token": self.token,
                            "children": wire[i : i + SPAWN_CHILDREN],
                        }
                    ]
                }
                r = await self.transport.call("POST", "/v1/worker/spawn", body)
                item = r["items"][0]
                if "error" in item:
                    e = item["error"]
                    raise error_from_item(str(e.get("code")), str(e.get("message")))
                handles += [TaskHandle.from_wire(h) for h in item["children"]]
        except BaseException:
            # A spawn that failed gives its numbers back, lowest first, as in TypeScript.
            self._free_seqs.extend(seqs)
            self._free_seqs.sort()
            raise
        return handles

    async def wait(self, handles: Sequence[TaskHandle | str] | None) -> list[Outcome]:
        self.check()
        if handles is None:
            return await self._wait_once(None)
        ids = [h.id if isinstance(h, TaskHandle) else h for h in handles]
        # More children than one request may name: a slice at a time. A slice not settled
        # suspends the task, whose re-run finds the earlier slices settled.
        outcomes: list[Outcome] = []
        for i in range(0, max(1, len(ids)), WAIT_IDS):
            outcomes += await self._wait_once(ids[i : i + WAIT_IDS])
        return outcomes

    async def _wait_once(self, ids: list[str] | None) -> list[Outcome]:
        item: w.WaitRequestItem = {"id": self.id, "token": self.token}
        if ids is None:
            item["all"] = True
        else:
            item["ids"] = ids
        repeated = False

        def again(_: Exception) -> None:
            nonlocal repeated
            repeated = True

        try:
            body: w.WaitRequest = {"items": [item]}
            r = await self.transport.call("POST", "/v1/worker/wait", body, on_retry=again)
            out = r["items"][0]
            if "error" in out:
                e = out["error"]
                raise error_from_item(str(e.get("code")), str(e.get("message")))
        except StaleAttemptError:
            # The first try may have suspended the task before its answer was lost: the
            # repeat then finds the attempt no longer holds it, which is what suspending means.
            if not repeated:
                raise
            out = {"suspended": True}
        if out.get("suspended"):
            self.suspended = True
            raise Suspend()
        return [Outcome.from_wire(o) for o in out["outcomes"]]

    async def get_step(self, name: str) -> tuple[bool, Any]:
        self.check()
        body: w.StepGetRequest = {"id": self.id, "token": self.token, "name": name}
        r = await self.transport.call("POST", "/v1/worker/steps/get", body)
        return bool(r["found"]), r.get("value")

    async def put_step(self, name: str, value: Any) -> None:
        body: w.StepPutRequest = {"id": self.id, "token": self.token, "name": name}
        if value is not None:
            body["value"] = to_jsonable_python(value)
        await self.transport.call("POST", "/v1/worker/steps/put", body)

    async def progress(self, value: Any) -> None:
        self.check()
        body: w.ProgressRequest = {
            "id": self.id,
            "token": self.token,
            "progress": to_jsonable_python(value),
        }
        await self.transport.call("POST", "/v1/worker/progress", body)

    async def heartbeat(self) -> bool:
        body: w.HeartbeatRequest = {"items": [self.ref]}
        if self.lease_ms is not None:
            body["leaseMs"] = self.lease_ms
        r = await self.transport.call("POST", "/v1/worker/heartbeat", body)
        status = str(r["items"][0])
        if status != "ok":
            self.on_status(self, status)
        return status == "ok"


def _failures(outcomes: list[Outcome]) -> list[Any]:
    failed = [o for o in outcomes if o.state != "succeeded"]
    if failed:
        raise ChildTaskFailedError(failed)
    return [o.result for o in outcomes]


class _Meta:
    _a: Attempt

    @property
    def task_id(self) -> str:
        """The task's id."""
        return self._a.id

    @property
    def job_id(self) -> str:
        return self._a.job_id

    @property
    def parent_id(self) -> str | None:
        """The parent task's id; ``None`` for a job's root task."""
        return self._a.parent_id

    @property
    def type(self) -> str:
        return self._a.type

    @property
    def attempt(self) -> int:
        """1 for the first attempt; re-runs after a durable wait keep the number."""
        return self._a.attempt

    @property
    def token(self) -> int:
        """The attempt token: every call of this attempt is guarded by it."""
        return self._a.token

    @property
    def payload(self) -> Any:
        """The payload as the server sent it (JSON: dicts, lists, ...)."""
        return self._a.payload

    @property
    def cancelled(self) -> threading.Event:
        """Set when the task is cancelled, times out, or this worker lost its lease."""
        return self._a.cancelled

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.type} {self.task_id} attempt {self.attempt}>"


class TaskContext(_Meta):
    """The context of a plain (``def``) handler, running on a worker thread.

    Cancellation is cooperative: ``ctx.cancelled`` (a :class:`threading.Event`) is set when the
    task is cancelled, times out or the lease is lost; the outcome of the run is then dropped.
    """

    def __init__(self, attempt: Attempt) -> None:
        self._a = attempt

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._a.loop:
            coro.close()
            raise RuntimeError(
                "TaskContext calls block: call them from the handler's thread, "
                "or declare the handler `async def` to get an AsyncTaskContext"
            )
        return asyncio.run_coroutine_threadsafe(coro, self._a.loop).result()

    def spawn(
        self,
        type: str,
        payload: Any = None,
        *,
        key: str | None = None,
        dedup_key: str | None = None,
        after: Sequence[str | TaskHandle] | None = None,
        priority: int | None = None,
        delay: Seconds | None = None,
        max_attempts: int | None = None,
        backoff: Seconds | None = None,
        max_backoff: Seconds | None = None,
        timeout: Seconds | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        ignore_failure: bool = False,
        run_regardless: bool = False,
    ) -> TaskHandle:
        """Spawns one child task; idempotent across re-runs (see :class:`Child`)."""
        child = Child(
            type, payload, key, dedup_key, after, priority, delay, max_attempts, backoff,
            max_backoff, timeout, concurrency_key, concurrency_limit, ignore_failure,
            run_regardless,
        )  # fmt: skip
        return self.spawn_many([child])[0]

    def spawn_many(self, children: Sequence[Child]) -> list[TaskHandle]:
        """Spawns many children in one transaction."""
        return self._run(self._a.spawn(list(children)))

    def wait_all_settled(self, handles: Sequence[TaskHandle | str] | None = None) -> list[Outcome]:
        """Waits durably for children (all of this task's when ``handles`` is omitted) and
        returns every outcome. If some are unsettled the run ends here, and the handler runs
        again from the top once they have all settled."""
        return self._run(self._a.wait(handles))

    def wait_all(self, handles: Sequence[TaskHandle | str] | None = None) -> list[Any]:
        """Waits durably like :meth:`wait_all_settled` and returns the results in order, or
        raises :class:`~dynatask.ChildTaskFailedError` if an awaited child did not succeed."""
        return _failures(self.wait_all_settled(handles))

    def step(self, name: str, fn: Callable[[], T]) -> T:
        """Runs ``fn`` once per task whatever the number of re-runs and attempts: its result
        (JSON) is stored and returned again by later runs."""
        found, value = self._run(self._a.get_step(name))
        if found:
            return cast(T, value)
        result = fn()
        self._run(self._a.put_step(name, result))
        return result

    def progress(self, value: Any) -> None:
        """Reports progress (any JSON value): event streams show it as a ``progress`` event."""
        self._run(self._a.progress(value))

    def heartbeat(self) -> bool:
        """Renews the lease now; false (and ``cancelled`` set) when the attempt no longer
        holds the task. The worker also renews leases by itself."""
        return self._run(self._a.heartbeat())


class AsyncTaskContext(_Meta):
    """The context of an ``async def`` handler, running on the worker's event loop.

    Cancellation cancels the handler's asyncio task (it sees :class:`asyncio.CancelledError`
    at its next ``await``), and sets ``ctx.cancelled``.
    """

    def __init__(self, attempt: Attempt) -> None:
        self._a = attempt

    async def spawn(
        self,
        type: str,
        payload: Any = None,
        *,
        key: str | None = None,
        dedup_key: str | None = None,
        after: Sequence[str | TaskHandle] | None = None,
        priority: int | None = None,
        delay: Seconds | None = None,
        max_attempts: int | None = None,
        backoff: Seconds | None = None,
        max_backoff: Seconds | None = None,
        timeout: Seconds | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        ignore_failure: bool = False,
        run_regardless: bool = False,
    ) -> TaskHandle:
        """Spawns one child task; idempotent across re-runs (see :class:`Child`)."""
        child = Child(
            type, payload, key, dedup_key, after, priority, delay, max_attempts, backoff,
            max_backoff, timeout, concurrency_key, concurrency_limit, ignore_failure,
            run_regardless,
        )  # fmt: skip
        return (await self._a.spawn([child]))[0]

    async def spawn_many(self, children: Sequence[Child]) -> list[TaskHandle]:
        """Spawns many children in one transaction."""
        return await self._a.spawn(list(children))

    async def wait_all_settled(
        self, handles: Sequence[TaskHandle | str] | None = None
    ) -> list[Outcome]:
        """As :meth:`TaskContext.wait_all_settled`."""
        return await self._a.wait(handles)

    async def wait_all(self, handles: Sequence[TaskHandle | str] | None = None) -> list[Any]:
        """As :meth:`TaskContext.wait_all`."""
        return _failures(await self._a.wait(handles))

    @overload
    async def step(self, name: str, fn: Callable[[], Awaitable[T]]) -> T: ...
    @overload
    async def step(self, name: str, fn: Callable[[], T]) -> T: ...
    async def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """As :meth:`TaskContext.step`; ``fn`` may be a plain function or a coroutine
        function."""
        found, value = await self._a.get_step(name)
        if found:
            return value
        result = fn()
        if inspect.isawaitable(result):
            result = await result
        await self._a.put_step(name, result)
        return result

    async def progress(self, value: Any) -> None:
        """As :meth:`TaskContext.progress`."""
        await self._a.progress(value)

    async def heartbeat(self) -> bool:
        """As :meth:`TaskContext.heartbeat`."""
        return await self._a.heartbeat()
