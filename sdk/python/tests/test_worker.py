"""The Python worker against a real dynatask server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytest

from dynatask import (
    AsyncTaskContext,
    Child,
    ChildTaskFailedError,
    NonRetryableError,
    TaskContext,
    Worker,
)

from .conftest import ServerProcess
from .worker_helpers import Api, serve


@pytest.fixture
def api(server: ServerProcess) -> Api:
    return Api(server.url)


@pytest.fixture
def ns(namespace: str) -> str:
    """A namespace per test: its types and tasks are its own."""
    return namespace


def test_spawn_and_resume_get_the_same_children(server: ServerProcess, api: Api, ns: str) -> None:
    runs: list[list[str]] = []
    w = Worker(server.url, namespace=ns, concurrency=4)

    @w.task("root")
    def root(ctx: TaskContext, payload: dict[str, Any]) -> int:
        handles = [ctx.spawn("leaf", {"n": n}) for n in range(payload["n"])]
        handles += ctx.spawn_many([Child("leaf", {"n": 10}, key="ten")])
        runs.append([h.id for h in handles])
        return sum(ctx.wait_all(handles))

    # The leaves finish only once the root has suspended in its wait, so that it surely runs
    # again (a fast worker could otherwise settle them before the wait).
    suspended = threading.Event()

    @w.task("leaf")
    async def leaf(ctx: AsyncTaskContext, payload: dict[str, Any]) -> int:
        await asyncio.to_thread(suspended.wait, 30)
        return int(payload["n"]) * 2

    for _ in serve(w):
        job_id = api.submit("root", {"n": 3}, namespace=ns)
        root_id = api.job(job_id)["rootTaskId"]
        api.until("the root to suspend", lambda r=root_id: api.task(r)["state"] == "waiting")
        suspended.set()
        job = api.settled(job_id)
    assert job["state"] == "succeeded", job
    assert job["result"] == 2 * (0 + 1 + 2 + 10)
    assert len(runs) == 2, "suspended once, re-run once"
    assert runs[0] == runs[1], "the re-run got the same children"
    tree = api.tree(job["id"])
    assert sorted(t["key"] for t in tree if t["parentId"]) == ["#0", "#1", "#2", "ten"]


def test_both_wait_shapes(server: ServerProcess, api: Api, ns: str) -> None:
    w = Worker(server.url, namespace=ns)
    seen: dict[str, Any] = {}

    @w.task("settled")
    async def settled(ctx: AsyncTaskContext) -> list[str]:
        await ctx.spawn("ok", {"v": 1})
        await ctx.spawn("bad", ignore_failure=True)
        outcomes = await ctx.wait_all_settled()
        seen["settled"] = outcomes
        return [o.state for o in outcomes]

    @w.task("strict")
    def strict(ctx: TaskContext) -> None:
        ctx.spawn("ok", {"v": 1})
        ctx.spawn("bad")
        try:
            ctx.wait_all()
        except ChildTaskFailedError as e:
            seen["failures"] = e.failures
            raise

    @w.task("ok")
    def ok(ctx: TaskContext, payload: dict[str, int]) -> int:
        return payload["v"]

    @w.task("bad")
    def bad(ctx: TaskContext) -> None:
        raise NonRetryableError("no")

    for _ in serve(w):
        # Within less than one long poll (10 s): an outcome reported while the worker's
        # poll waits must not sit there until the poll ends.
        a = api.settled(api.submit("settled", namespace=ns), timeout=8)
        b = api.settled(api.submit("strict", namespace=ns), timeout=8)
    assert a["state"] == "succeeded", a
    assert a["result"] == ["succeeded", "failed"]
    assert seen["settled"][0].result == 1
    assert seen["settled"][1].error["name"] == "NonRetryableError"
    assert b["state"] == "failed", b
    assert b["error"]["name"] == "ChildTaskFailedError"
    assert [o.state for o in seen["failures"]] == ["failed"]
    # A child's failure is final: the parent is not retried.
    assert api.task(b["rootTaskId"])["attempt"] == 1


def test_steps_are_memoised_across_attempts_and_retries_back_off(
    server: ServerProcess, api: Api, ns: str
) -> None:
    calls: list[int] = []
    w = Worker(server.url, namespace=ns)

    @w.task("flaky", max_attempts=3, backoff=0.05)
    async def flaky(ctx: AsyncTaskContext) -> dict[str, int]:
        async def once() -> int:
            calls.append(ctx.attempt)
            return 42

        value = await ctx.step("once", once)
        sync_value = await ctx.step("plain", lambda: 7)
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} fails")
        return {"value": value, "plain": sync_value, "attempt": ctx.attempt}

    for _ in serve(w):
        job = api.settled(api.submit("flaky", namespace=ns))
    assert job["state"] == "succeeded", job
    assert job["result"] == {"value": 42, "plain": 7, "attempt": 3}
    assert calls == [1]
    info = api.task(job["rootTaskId"])
    assert [a["error"]["message"] for a in info["attempts"]] == [
        "attempt 1 fails",
        "attempt 2 fails",
    ]


def test_progress_is_stored(server: ServerProcess, api: Api, ns: str) -> None:
    w = Worker(server.url, namespace=ns)

    @w.task("p")
    def p(ctx: TaskContext) -> None:
        ctx.progress({"done": 1, "of": 2})
        ctx.progress({"done": 2, "of": 2})

    for _ in serve(w):
        job = api.settled(api.submit("p", namespace=ns))
    assert job["state"] == "succeeded", job
    assert api.task(job["rootTaskId"])["progress"] == {"done": 2, "of": 2}


def test_cancellation_reaches_thread_and_coroutine_handlers(
    server: ServerProcess, api: Api, ns: str
) -> None:
    started = {"sync": threading.Event(), "async": threading.Event()}
    saw = {"sync": threading.Event(), "async": threading.Event()}
    w = Worker(server.url, namespace=ns)

    @w.task("sync")
    def sync(ctx: TaskContext) -> None:
        started["sync"].set()
        if ctx.cancelled.wait(30):
            saw["sync"].set()

    @w.task("async")
    async def coro(ctx: AsyncTaskContext) -> None:
        started["async"].set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            saw["async"].set()
            raise

    for _ in serve(w):
        jobs = {kind: api.submit(kind, namespace=ns) for kind in ("sync", "async")}
        for kind, job_id in jobs.items():
            assert started[kind].wait(20)
            api.cancel(job_id)
        for kind in jobs:
            assert saw[kind].wait(10), f"the {kind} handler saw its cancellation"
        for job_id in jobs.values():
            assert api.settled(job_id)["state"] == "cancelled"


@dataclass
class Resize:
    url: str
    width: int


class Crop(pydantic.BaseModel):
    box: tuple[int, int, int, int]


def test_payloads_are_validated_from_the_annotation(
    server: ServerProcess, api: Api, ns: str
) -> None:
    w = Worker(server.url, namespace=ns)

    @w.task("resize", max_attempts=3)
    def resize(ctx: TaskContext, payload: Resize) -> Resize:
        assert isinstance(payload, Resize)
        return Resize(payload.url, payload.width * 2)

    @w.task("crop")
    async def crop(ctx: AsyncTaskContext, payload: Crop) -> Crop:
        assert isinstance(payload, Crop)
        return payload

    for _ in serve(w):
        good = api.settled(api.submit("resize", {"url": "a.png", "width": 10}, namespace=ns))
        model = api.settled(api.submit("crop", {"box": [0, 0, 4, 4]}, namespace=ns))
        bad = api.settled(api.submit("resize", {"url": "a.png", "width": "wide"}, namespace=ns))
    assert good["result"] == {"url": "a.png", "width": 20}
    assert model["result"] == {"box": [0, 0, 4, 4]}
    assert bad["state"] == "failed"
    assert bad["error"]["name"] == "PayloadValidationError"
    assert "width" in bad["error"]["message"]
    assert api.task(bad["rootTaskId"])["attempt"] == 1, "not retried"


def test_a_timeout_fails_the_attempt(server: ServerProcess, api: Api, ns: str) -> None:
    w = Worker(server.url, namespace=ns)

    @w.task("slow", timeout=0.3, max_attempts=1)
    async def slow(ctx: AsyncTaskContext) -> None:
        await asyncio.sleep(30)

    for _ in serve(w):
        job = api.settled(api.submit("slow", namespace=ns))
    assert job["state"] == "failed"
    assert job["error"]["name"] == "TimeoutError"


WORKER_SCRIPT = Path(__file__).parent / "fixtures" / "drain_worker.py"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains(server: ServerProcess, api: Api, ns: str, sig: signal.Signals) -> None:
    p = subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT), server.url, ns],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        job_id = api.submit("drain", {"seconds": 1.0}, namespace=ns)
        assert p.stdout.readline().strip() == "started"
        p.send_signal(sig)
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 0, out
        assert "finished" in out
    finally:
        if p.poll() is None:
            p.kill()
    job = api.settled(job_id)
    assert job["state"] == "succeeded", job
    assert api.task(job["rootTaskId"])["attempt"] == 1
    served = api.t.call("GET", "/v1/types", params={"namespace": ns})["types"]
    assert not any(t["served"] for t in served), "the worker told the server it stopped"


def test_total_and_per_type_concurrency(server: ServerProcess, api: Api, ns: str) -> None:
    lock = threading.Lock()
    now: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    def enter(kind: str) -> None:
        with lock:
            now[kind] += 1
            now["all"] += 1
            for k in (kind, "all"):
                peak[k] = max(peak[k], now[k])

    def leave(kind: str) -> None:
        with lock:
            now[kind] -= 1
            now["all"] -= 1

    w = Worker(server.url, namespace=ns, concurrency=3)

    @w.task("a")
    def a(ctx: TaskContext) -> None:
        enter("a")
        time.sleep(0.1)  # the work
        leave("a")

    @w.task("b", concurrency=1)  # across every worker of the namespace
    async def b(ctx: AsyncTaskContext) -> None:
        enter("b")
        await asyncio.sleep(0.1)
        leave("b")

    for _ in serve(w):
        jobs = [api.submit("a", namespace=ns) for _ in range(8)]
        jobs += [api.submit("b", namespace=ns) for _ in range(4)]
        assert {api.settled(j)["state"] for j in jobs} == {"succeeded"}
    assert peak["all"] == 3
    assert peak["b"] == 1
    assert peak["a"] >= 2


def test_a_stopping_worker_releases_what_it_did_not_start(
    server: ServerProcess, api: Api, ns: str
) -> None:
    # One thread: the first task times out but its handler keeps the thread (Python cannot
    # stop a thread), so the second task, claimed into the freed slot, waits unstarted.
    hold = threading.Event()
    w = Worker(server.url, namespace=ns, concurrency=1)

    @w.task("hog", timeout=0.2, max_attempts=1)
    def hog(ctx: TaskContext) -> None:
        hold.wait(30)

    @w.task("next")
    def nxt(ctx: TaskContext) -> int:
        return ctx.attempt

    try:
        for _ in serve(w):
            hog_job = api.submit("hog", namespace=ns)
            assert api.settled(hog_job)["error"]["name"] == "TimeoutError"
            job = api.submit("next", namespace=ns)
            root = api.job(job)["rootTaskId"]
            api.until("next claimed", lambda r=root: api.task(r)["state"] == "running")
    finally:
        hold.set()
    task = api.task(root)
    assert task["state"] == "queued", "given back at once, not left to its lease"
    assert task["workerId"] is None
    w2 = Worker(server.url, namespace=ns)
    w2.task("next")(nxt)
    for _ in serve(w2):
        done = api.settled(job)
    assert done["result"] == 1, "the release counted no attempt"


def test_a_spawn_bigger_than_one_request(server: ServerProcess, api: Api, ns: str) -> None:
    n = 5001  # two requests of the worker (5,000 children each at most)
    runs: list[int] = []
    w = Worker(server.url, namespace=ns, concurrency=64)

    @w.task("wide")
    async def wide(ctx: AsyncTaskContext) -> int:
        kids = await ctx.spawn_many([Child("one", i) for i in range(n)])
        runs.append(len({k.id for k in kids}))
        return sum(await ctx.wait_all(kids))

    @w.task("one")
    async def one(ctx: AsyncTaskContext, payload: int) -> int:
        return payload

    for _ in serve(w):
        job = api.settled(api.submit("wide", namespace=ns), timeout=120)
    assert job["result"] == n * (n - 1) // 2
    assert runs == [n, n]
    assert api.job(job["id"])["total"] == n + 1


def test_a_lost_lease_aborts_only_that_attempt(server: ServerProcess, api: Api, ns: str) -> None:
    # The victim's attempt stops holding its task (here: given back with its token, as a
    # server does when the lease expires and another attempt takes over); the worker's next
    # heartbeat learns it and aborts that attempt alone.
    first: dict[str, Any] = {}
    started = {"victim": threading.Event(), "bystander": threading.Event()}
    lost = threading.Event()
    finish_bystander = threading.Event()
    w = Worker(server.url, namespace=ns, concurrency=4)

    @w.task("victim")
    def victim(ctx: TaskContext) -> str:
        if not first:
            first.update(id=ctx.task_id, token=ctx.token)
            started["victim"].set()
            if ctx.cancelled.wait(30):
                lost.set()
            return "first run"
        return "second run"

    @w.task("bystander")
    def bystander(ctx: TaskContext) -> str:
        started["bystander"].set()
        finish_bystander.wait(30)
        return "untouched" if not ctx.cancelled.is_set() else "aborted too"

    for _ in serve(w):
        v = api.submit("victim", namespace=ns)
        b = api.submit("bystander", namespace=ns)
        assert started["victim"].wait(20)
        assert started["bystander"].wait(20)
        r = api.t.call("POST", "/v1/worker/release", {"items": [first]})
        assert r["items"] == ["ok"]
        assert lost.wait(10), "the heartbeat's answer aborted the attempt"
        finish_bystander.set()
        assert api.settled(v)["result"] == "second run", (
            "its outcome was dropped, the task ran again"
        )
        done = api.settled(b)
    assert done["result"] == "untouched"
    assert api.task(done["rootTaskId"])["attempt"] == 1
