"""The protocol scenarios of spec/scenarios, run by the Python SDK against a real server.

The same JSON files the TypeScript remote client runs (test/spec.test.ts; the format:
spec/README.md): each scenario's handlers are data, turned here into handlers of a
:class:`dynatask.Worker`, once as plain functions (``def``, on the worker's thread pool) and once
as coroutines (``async def``, on its event loop), on SQLite and on PostgreSQL. The worker talks
to the server through a proxy in this file that can lose answers (the server acted, the
connection is cut) and withhold a task's heartbeats (so its lease expires); an observer
``Client`` and a raw event stream talk to the server directly. After the job has settled, what
happened is compared with the scenario's ``expect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import jsonschema
import pytest

from dynatask import (
    AsyncTaskContext,
    Child,
    ChildTaskFailedError,
    Client,
    NonRetryableError,
    Outcome,
    StaleAttemptError,
    TaskContext,
    TaskHandle,
    Worker,
)
from dynatask.context import Suspend

from .conftest import FreshDatabase, ServerProcess

SPEC = Path(__file__).resolve().parents[3] / "spec"
TIMEOUT = 30.0
"""Longest wait for a job to settle, or for anything a scenario waits on."""


def scenario_validator() -> jsonschema.Draft202012Validator:
    """spec/scenario.schema.json."""
    return jsonschema.Draft202012Validator(json.loads((SPEC / "scenario.schema.json").read_text()))


def load_scenarios() -> list[dict[str, Any]]:
    """Every scenario file, checked against spec/scenario.schema.json."""
    validator = scenario_validator()
    out = []
    for path in sorted((SPEC / "scenarios").glob("*.json")):
        scenario = json.loads(path.read_text())
        errors = sorted(validator.iter_errors(scenario), key=lambda e: list(e.path))
        if errors:
            where = "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
            raise ValueError(f"spec/scenarios/{path.name} does not match the schema: {where}")
        if f"{scenario['name']}.json" != path.name:
            raise ValueError(f"spec/scenarios/{path.name}: its name is {scenario['name']}")
        out.append(scenario)
    return out


SCENARIOS = load_scenarios()


def test_the_scenarios_the_issue_names_are_there() -> None:
    names = {s["name"] for s in SCENARIOS}
    assert names >= {
        "spawn-and-resume",
        "wait-shapes",
        "retries-backoff",
        "stale-after-lease-expiry",
        "cancel-running-task",
        "dedup-keys",
        "dependencies",
        "steps-across-attempts",
        "progress-events",
        "lost-answers",
    }


def test_the_schema_refuses_what_is_not_a_scenario() -> None:
    validator = scenario_validator()
    good = next(s for s in SCENARIOS if s["name"] == "spawn-and-resume")
    assert validator.is_valid(good)
    x = good["expect"]
    bad: list[dict[str, Any]] = [
        {**good, "extra": True},
        {**good, "handlers": {"parent": [{"do": "teleport"}]}},
        {**good, "handlers": {"parent": [{"do": "spawn"}]}},
        {
            **good,
            "handlers": {"parent": [{"do": "step", "name": "s", "value": 1, "onAttempt": [1]}]},
        },
        {**good, "handlers": {"parent": [{"do": "spawn", "type": "x", "options": {"key": "#1"}}]}},
        {**good, "expect": {**x, "tasks": {"root/#0": {"stat": "succeeded"}}}},
        {**good, "expect": {**x, "tasks": {"nowhere": {}}}},
        {**good, "expect": {**x, "runz": {}}},
        {**good, "interventions": [{"do": "cancelTask", "when": {"started": "root"}, "after": 1}]},
    ]
    for b in bad:
        assert not validator.is_valid(b), json.dumps(b)[:300]


# ---------------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def spec_server(fresh_database: FreshDatabase) -> Iterator[ServerProcess]:
    """A server whose sweeper looks for expired leases every 500 ms (its lease: 1 s; the
    scenarios' workers ask for their own)."""
    srv = ServerProcess(
        database=fresh_database(), args=["--grace-ms", "2000", "--lease-ms", "1000"]
    ).start()
    yield srv
    srv.stop()


# ---------------------------------------------------------------------------------- the proxy


class FaultyProxy:
    """Forwards every request to the server; cuts the first answer to each path of ``lose``
    (after the server acted); keeps the heartbeats of the tasks in ``withheld`` from the server,
    answering them "ok" as if renewed."""

    def __init__(self, target: str, lose: list[str]) -> None:
        self.target = target
        self.lose = set(lose)
        self.cut: set[str] = set()
        self.withheld: set[str] = set()
        self.lock = threading.Lock()
        self.http = httpx.Client(timeout=70.0, verify=False)  # plain http: no certificates to load
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.handle(self)

            def do_POST(self) -> None:
                proxy.handle(self)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up, or a cut connection

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.http.close()

    def _forward(self, req: http.server.BaseHTTPRequestHandler, body: bytes) -> httpx.Response:
        headers = {}
        for name in ("content-type", "authorization", "accept"):
            value = req.headers.get(name)
            if value:
                headers[name] = value
        return self.http.request(
            req.command, self.target + req.path, content=body or None, headers=headers
        )

    @staticmethod
    def _answer(req: http.server.BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        req.send_response(status)
        req.send_header("content-type", "application/json")
        req.send_header("content-length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("content-length") or 0)
        body = req.rfile.read(length) if length else b""
        path = req.path.split("?")[0]
        if path == "/v1/worker/heartbeat" and self.withheld and body:
            self._heartbeat(req, body)
            return
        answer = self._forward(req, body)
        with self.lock:
            cut = path in self.lose and path not in self.cut
            if cut:
                self.cut.add(path)
        if cut:
            req.close_connection = True
            with contextlib.suppress(OSError):
                req.connection.shutdown(socket.SHUT_RDWR)
            return
        self._answer(req, answer.status_code, answer.content)

    def _heartbeat(self, req: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        parsed = json.loads(body)
        items: list[dict[str, Any]] = parsed["items"]
        answers = ["ok"] * len(items)
        kept = [(i, item) for i, item in enumerate(items) if item["id"] not in self.withheld]
        if kept:
            answer = self._forward(
                req, json.dumps({**parsed, "items": [item for _, item in kept]}).encode()
            )
            if answer.status_code != 200:
                self._answer(req, answer.status_code, answer.content)
                return
            for (i, _), status in zip(kept, answer.json()["items"], strict=True):
                answers[i] = status
        self._answer(req, 200, json.dumps({"items": answers}).encode())


class EventStream:
    """The server's ``GET /v1/events``, read raw on a thread (open before the submission)."""

    def __init__(self, url: str, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.opened = threading.Event()
        self.closed = False
        self.on_event = on_event
        self.client = httpx.Client(timeout=httpx.Timeout(10.0, read=None), verify=False)
        self.thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self.thread.start()
        if not self.opened.wait(10):
            raise TimeoutError("the event stream did not open")

    def _read(self, url: str) -> None:
        with (
            contextlib.suppress(httpx.HTTPError),
            self.client.stream(
                "GET", f"{url}/v1/events", headers={"accept": "text/event-stream"}
            ) as res,
        ):
            self.opened.set()
            data: list[str] = []
            for line in res.iter_lines():
                if self.closed:
                    return
                if line == "":
                    if data:
                        self.on_event(json.loads("\n".join(data)))
                    data = []
                elif line.startswith("data:"):
                    data.append(line[6:] if line[5:6] == " " else line[5:])

    def close(self) -> None:
        self.closed = True
        self.client.close()


# ---------------------------------------------------------------------------------- a run


@dataclass
class RunState:
    """What the handlers of one scenario did, counted here."""

    runs: dict[str, int] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    cancel_seen: dict[str, int] = field(default_factory=dict)
    stale_refused: dict[str, int] = field(default_factory=dict)
    suspended: dict[str, int] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)
    max_running: dict[str, int] = field(default_factory=dict)
    starts: list[str] = field(default_factory=list)
    """Task ids in the order their handler runs started."""
    active: int = 0
    problems: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)
    pending: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def inc(self, counts: dict[str, int], key: str, by: int = 1) -> None:
        with self.cond:
            counts[key] = counts.get(key, 0) + by
            self.cond.notify_all()

    def add_active(self, type: str, by: int) -> None:
        """A handler run of ``type`` began (1) or ended (-1)."""
        with self.cond:
            self.active += by
            now = self.running.get(type, 0) + by
            self.running[type] = now
            self.max_running[type] = max(self.max_running.get(type, 0), now)
            self.cond.notify_all()

    def add_pending(self, by: int) -> None:
        with self.cond:
            self.pending += by
            self.cond.notify_all()

    def until(self, cond: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        with self.cond:
            if not self.cond.wait_for(cond, timeout):
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")

    def until_suspended(self, type: str, n: int) -> None:
        """Blocks until ``n`` runs of handlers of ``type`` have suspended in a durable wait."""
        self.until(lambda: self.suspended.get(type, 0) >= n, f"{n} suspended run(s) of {type}")


def evaluate(e: Any, vars: dict[str, Any]) -> Any:
    """An expression of the format: JSON with {$ref}, {$sum} and {$count}."""
    if isinstance(e, list):
        return [evaluate(x, vars) for x in e]
    if not isinstance(e, dict):
        return e
    if isinstance(e.get("$ref"), str):
        name, *rest = e["$ref"].split(".")
        if name not in vars:
            raise KeyError(f"$ref {e['$ref']}: no variable {name}")
        v = vars[name]
        for part in rest:
            if isinstance(v, list):
                v = v[int(part)] if int(part) < len(v) else None
            elif isinstance(v, dict):
                v = v.get(part)
            else:
                v = None
        return v
    if "$sum" in e:
        return sum(evaluate(e["$sum"], vars))
    if "$count" in e:
        return len(evaluate(e["$count"], vars))
    return {k: evaluate(v, vars) for k, v in e.items()}


def outcome_view(o: Outcome) -> dict[str, Any]:
    if o.state == "succeeded":
        return {"state": o.state, "result": o.result}
    return {"state": o.state, "error": (o.error or {}).get("name")}


def failure_class(name: str, retryable: bool) -> type[Exception]:
    """An exception class named as the scenario says (the worker stores the class's name)."""
    base: type[Exception] = Exception if retryable else NonRetryableError
    return type(name, (base,), {})


def seconds(ms: Any) -> float:
    return float(ms) / 1000


def spawn_options(
    o: dict[str, Any], handle: Callable[[Any], TaskHandle] | None = None
) -> dict[str, Any]:
    """A scenario's spawn options as the keyword arguments of ``ctx.spawn`` and ``Child``;
    ``handle`` turns an ``after`` entry that is a {"$ref"} into the handle it names."""
    concurrency = o.get("concurrency") or {}
    after = o.get("after")
    if after is not None and handle is not None:
        after = [x if isinstance(x, str) else handle(x) for x in after]
    return {
        "key": o.get("key"),
        "dedup_key": o.get("dedupKey"),
        "after": after,
        "priority": o.get("priority"),
        "delay": seconds(o["delayMs"]) if "delayMs" in o else None,
        "max_attempts": o.get("maxAttempts"),
        "backoff": seconds(o["backoffMs"]) if "backoffMs" in o else None,
        "max_backoff": seconds(o["maxBackoffMs"]) if "maxBackoffMs" in o else None,
        "timeout": seconds(o["timeoutMs"]) if "timeoutMs" in o else None,
        "concurrency_key": concurrency.get("key"),
        "concurrency_limit": concurrency.get("limit"),
        "ignore_failure": bool(o.get("ignoreFailure", False)),
        "run_regardless": bool(o.get("runRegardless", False)),
    }


def child_of(
    spec: dict[str, Any], vars: dict[str, Any], handle: Callable[[Any], TaskHandle]
) -> Child:
    payload = evaluate(spec.get("payload"), vars)
    return Child(spec["type"], payload, **spawn_options(spec.get("options") or {}, handle))


class Performer:
    """One run of a handler given as data: variables, handles behind their views."""

    def __init__(self, type: str, ctx: TaskContext | AsyncTaskContext, run: RunState) -> None:
        self.type = type
        self.ctx = ctx
        self.run = run
        self.vars: dict[str, Any] = {"payload": ctx.payload, "attempt": ctx.attempt}
        self.handles: dict[int, TaskHandle] = {}

    def where(self) -> str:
        return f"{self.type} (attempt {self.ctx.attempt})"

    def view(self, h: TaskHandle) -> dict[str, Any]:
        with self.run.cond:
            if h.id not in self.run.paths and h.parent_id in self.run.paths:
                self.run.paths[h.id] = f"{self.run.paths[h.parent_id]}/{h.key}"
        own = h.parent_id == self.ctx.task_id
        v = {"type": h.type, "key": h.key, "created": h.created, "own": own}
        self.handles[id(v)] = h
        return v

    def handle_ref(self, ref: Any) -> TaskHandle:
        """The handle behind the view a {"$ref"} evaluates to."""
        return self.handles[id(evaluate(ref, self.vars))]

    def handles_of(self, names: str | list[str] | None) -> list[TaskHandle] | None:
        if names is None:
            return None
        out = []
        for n in [names] if isinstance(names, str) else names:
            v = self.vars[n]
            for x in v if isinstance(v, list) else [v]:
                out.append(self.handles[id(x)])
        return out

    def skip(self, a: dict[str, Any]) -> bool:
        return "onAttempts" in a and self.ctx.attempt not in a["onAttempts"]

    def fail(self, a: dict[str, Any]) -> Exception:
        return failure_class(a["name"], a["retryable"])(a.get("message", ""))

    def step_fn(self, a: dict[str, Any]) -> Callable[[], Any]:
        def fn() -> Any:
            self.run.inc(self.run.steps, f"{self.type}/{a['name']}")
            return evaluate(a.get("value"), self.vars)

        return fn

    def refused(self, a: dict[str, Any], e: BaseException) -> bool:
        """After a call raised: whether the scenario expected it (stale), else re-raise."""
        if isinstance(e, Suspend):
            self.run.inc(self.run.suspended, self.type)
            return False
        if a.get("expectStale") and isinstance(e, StaleAttemptError):
            self.run.inc(self.run.stale_refused, self.type)
            return True
        if a.get("expectStale"):
            self.run.problems.append(f"{self.where()}: {a['do']} failed but not as stale: {e!r}")
        return False

    def done(self, a: dict[str, Any], value: Any) -> None:
        if a.get("expectStale"):
            self.run.problems.append(
                f"{self.where()}: {a['do']} was expected to be refused as stale, and succeeded"
            )
            return
        if "as" in a:
            self.vars[a["as"]] = value

    def perform_sync(self, actions: list[dict[str, Any]]) -> Any:
        ctx = cast(TaskContext, self.ctx)
        for a in actions:
            if self.skip(a):
                continue
            do = a["do"]
            if do == "return":
                return evaluate(a["value"], self.vars)
            if do == "fail":
                raise self.fail(a)
            if do == "sleepUntilCancelled":
                if not ctx.cancelled.wait(TIMEOUT):
                    self.run.problems.append(f"{self.where()}: no cancellation seen")
                self.run.inc(self.run.cancel_seen, self.type)
                continue
            if do == "awaitSuspended":
                self.run.until_suspended(a["type"], a.get("count", 1))
                continue
            value: Any = None
            try:
                if do == "spawn":
                    payload = evaluate(a.get("payload"), self.vars)
                    options = spawn_options(a.get("options") or {}, self.handle_ref)
                    value = self.view(ctx.spawn(a["type"], payload, **options))
                elif do == "spawnMany":
                    kids = [child_of(c, self.vars, self.handle_ref) for c in a["children"]]
                    value = [self.view(h) for h in ctx.spawn_many(kids)]
                elif do == "waitAll":
                    try:
                        value = ctx.wait_all(self.handles_of(a.get("handles")))
                    except ChildTaskFailedError as e:
                        if "catch" not in a:
                            raise
                        self.vars[a["catch"]] = [outcome_view(o) for o in e.failures]
                        continue
                elif do == "waitAllSettled":
                    outcomes = ctx.wait_all_settled(self.handles_of(a.get("handles")))
                    value = [outcome_view(o) for o in outcomes]
                elif do == "step":
                    value = ctx.step(a["name"], self.step_fn(a))
                elif do == "progress":
                    ctx.progress(evaluate(a["value"], self.vars))
                else:
                    raise ValueError(f"unknown action {do}")
            except BaseException as e:
                if self.refused(a, e):
                    continue
                raise
            self.done(a, value)
        return None

    async def perform_async(self, actions: list[dict[str, Any]]) -> Any:
        ctx = cast(AsyncTaskContext, self.ctx)
        for a in actions:
            if self.skip(a):
                continue
            do = a["do"]
            if do == "return":
                return evaluate(a["value"], self.vars)
            if do == "fail":
                raise self.fail(a)
            if do == "sleepUntilCancelled":
                try:
                    await asyncio.sleep(TIMEOUT)
                    self.run.problems.append(f"{self.where()}: no cancellation seen")
                except asyncio.CancelledError:
                    # The coroutine's cancellation is how an async handler learns of it; the
                    # scenario goes on to show what calls after it do.
                    pass
                self.run.inc(self.run.cancel_seen, self.type)
                continue
            if do == "awaitSuspended":
                # On a thread of its own: the worker's loop must go on (the wait suspends there).
                await asyncio.to_thread(self.run.until_suspended, a["type"], a.get("count", 1))
                continue
            value: Any = None
            try:
                if do == "spawn":
                    payload = evaluate(a.get("payload"), self.vars)
                    options = spawn_options(a.get("options") or {}, self.handle_ref)
                    value = self.view(await ctx.spawn(a["type"], payload, **options))
                elif do == "spawnMany":
                    kids = [child_of(c, self.vars, self.handle_ref) for c in a["children"]]
                    value = [self.view(h) for h in await ctx.spawn_many(kids)]
                elif do == "waitAll":
                    try:
                        value = await ctx.wait_all(self.handles_of(a.get("handles")))
                    except ChildTaskFailedError as e:
                        if "catch" not in a:
                            raise
                        self.vars[a["catch"]] = [outcome_view(o) for o in e.failures]
                        continue
                elif do == "waitAllSettled":
                    outcomes = await ctx.wait_all_settled(self.handles_of(a.get("handles")))
                    value = [outcome_view(o) for o in outcomes]
                elif do == "step":
                    value = await ctx.step(a["name"], self.step_fn(a))
                elif do == "progress":
                    await ctx.progress(evaluate(a["value"], self.vars))
                else:
                    raise ValueError(f"unknown action {do}")
            except BaseException as e:
                if self.refused(a, e):
                    continue
                raise
            self.done(a, value)
        return None


def _pick(error: dict[str, Any] | None, want: dict[str, Any]) -> Any:
    if error is None:
        return None
    return {k: error.get(k) for k in want}


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


def run_scenario(s: dict[str, Any], url: str, flavour: str) -> tuple[Any, Any, list[str]]:
    """Runs one scenario against the server at ``url``; returns (actual, expected, problems)."""
    namespace = f"spec-{s['name']}-{uuid.uuid4().hex[:8]}"
    run = RunState()
    interventions: list[dict[str, Any]] = s.get("interventions", [])
    lose = [p for i in interventions if i["do"] == "loseAnswers" for p in i["paths"]]
    proxy = FaultyProxy(url, lose)
    observer = Client(url, namespace=namespace)
    events: list[dict[str, Any]] = []

    def on_event(e: dict[str, Any]) -> None:
        with run.cond:
            events.append(e)
            run.cond.notify_all()

    stream = EventStream(url, on_event)
    worker_settings = s.get("worker", {})
    worker = Worker(
        proxy.url,
        namespace=namespace,
        concurrency=worker_settings.get("concurrency", 16),
        lease=seconds(worker_settings.get("leaseMs", 10_000)),
        grace=5.0,
    )
    thread: threading.Thread | None = None
    job_id = ""
    fired: set[int] = set()
    fired_lock = threading.Lock()

    def path_of(task_id: str) -> str:
        with run.cond:
            known = run.paths.get(task_id)
        if known is not None:
            return known
        # A child may start before its parent's spawn has answered.
        t = observer.get_task(task_id)
        assert t.parent_id is not None
        path = f"{path_of(t.parent_id)}/{t.key}"
        with run.cond:
            run.paths[task_id] = path
        return path

    def id_of(path: str) -> str | None:
        with run.cond:
            return next((i for i, p in run.paths.items() if p == path), None)

    def intervene(i: dict[str, Any], index: int, task_id: str, attempt: int) -> None:
        try:
            if path_of(task_id) != i["when"]["started"]:
                return
            with fired_lock:
                if index in fired:
                    return
                fired.add(index)
            if i["do"] == "cancelTask":
                target = id_of(i["task"]) if "task" in i else task_id
                if target is None:
                    raise LookupError(f"cancelTask: no task {i['task']} known")
                observer.cancel_task(target, i.get("reason"))
            elif i["do"] == "cancelJob":
                observer.cancel_job(job_id, i.get("reason"))
            else:  # expireLease
                proxy.withheld.add(task_id)
                # Until the server has failed this attempt (its lease expired).
                deadline = time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    t = observer.get_task(task_id)
                    if t.attempt > attempt or any(r.attempt == attempt for r in t.attempts):
                        break
                    time.sleep(0.05)
                proxy.withheld.discard(task_id)
        except Exception as e:
            run.problems.append(f"intervention {i['do']} failed: {e!r}")
        finally:
            run.add_pending(-1)

    def on_start(task_id: str, attempt: int) -> None:
        for index, i in enumerate(interventions):
            if i["do"] == "loseAnswers" or index in fired:
                continue
            if "attempt" in i["when"] and i["when"]["attempt"] != attempt:
                continue
            run.add_pending(1)
            threading.Thread(
                target=intervene, args=(i, index, task_id, attempt), daemon=True
            ).start()

    def register(type: str, actions: list[dict[str, Any]]) -> None:
        settings = s.get("types", {}).get(type, {})
        decorator = worker.task(
            type,
            concurrency=settings.get("concurrency"),
            max_attempts=settings.get("maxAttempts"),
            backoff=seconds(settings["backoffMs"]) if "backoffMs" in settings else None,
            max_backoff=seconds(settings["maxBackoffMs"]) if "maxBackoffMs" in settings else None,
            timeout=seconds(settings["timeoutMs"]) if "timeoutMs" in settings else None,
        )
        if flavour == "sync":

            def sync_handler(ctx: TaskContext, payload: Any) -> Any:
                run.inc(run.runs, type)
                run.starts.append(ctx.task_id)
                run.add_active(type, 1)
                try:
                    on_start(ctx.task_id, ctx.attempt)
                    return Performer(type, ctx, run).perform_sync(actions)
                finally:
                    run.add_active(type, -1)

            decorator(sync_handler)
        else:

            async def async_handler(ctx: AsyncTaskContext, payload: Any) -> Any:
                run.inc(run.runs, type)
                run.starts.append(ctx.task_id)
                run.add_active(type, 1)
                try:
                    on_start(ctx.task_id, ctx.attempt)
                    return await Performer(type, ctx, run).perform_async(actions)
                finally:
                    run.add_active(type, -1)

            decorator(async_handler)

    try:
        for type, actions in s["handlers"].items():
            register(type, actions)
        submit = s["submit"]
        o = submit.get("options", {})
        concurrency = o.get("concurrency") or {}
        with Client(proxy.url, namespace=namespace) as submitter:
            job = submitter.submit(
                submit["type"],
                submit.get("payload"),
                priority=o.get("priority"),
                delay=seconds(o["delayMs"]) if "delayMs" in o else None,
                max_attempts=o.get("maxAttempts"),
                backoff=seconds(o["backoffMs"]) if "backoffMs" in o else None,
                max_backoff=seconds(o["maxBackoffMs"]) if "maxBackoffMs" in o else None,
                timeout=seconds(o["timeoutMs"]) if "timeoutMs" in o else None,
                concurrency_key=concurrency.get("key"),
                concurrency_limit=concurrency.get("limit"),
            )
        job_id = job.id
        with run.cond:
            run.paths[job.root_task_id] = "root"
        thread = threading.Thread(
            target=lambda: asyncio.run(worker.serve(handle_signals=False)), daemon=True
        )
        thread.start()

        deadline = time.monotonic() + TIMEOUT
        info = observer.get_job(job_id)
        while info.state == "running":
            if time.monotonic() > deadline:
                raise TimeoutError(f"job still running after {TIMEOUT} s: {info.counts}")
            time.sleep(0.025)
            info = observer.get_job(job_id)
        run.until(
            lambda: (
                run.active == 0
                and run.pending == 0
                and any(e.get("kind") == "job" and e.get("jobId") == job_id for e in events)
            ),
            "the handlers to return, the interventions to end and the job event",
        )
        worker.stop()
        thread.join(TIMEOUT)

        tasks = list(observer.iter_tree(job_id))
        path_by_id: dict[str, str] = {}
        for t in tasks:
            parent = None if t.parent_id is None else path_by_id[t.parent_id]
            path_by_id[t.id] = "root" if parent is None else f"{parent}/{t.key}"
        x = s["expect"]
        expected: dict[str, Any] = dict(x)
        actual: dict[str, Any] = {}
        job_actual: dict[str, Any] = {"state": info.state}
        if "result" in x["job"]:
            job_actual["result"] = info.result
        if "error" in x["job"]:
            job_actual["error"] = _pick(info.error, x["job"]["error"])
        actual["job"] = job_actual
        actual_tasks: dict[str, Any] = {}
        for t in tasks:
            path = path_by_id[t.id]
            want = x["tasks"].get(path)
            if want is None:
                actual_tasks[path] = {"type": t.type, "state": t.state, "attempt": t.attempt}
                continue
            got: dict[str, Any] = {}
            if "type" in want:
                got["type"] = t.type
            if "state" in want:
                got["state"] = t.state
            if "attempt" in want:
                got["attempt"] = t.attempt
            if "result" in want:
                got["result"] = t.result
            if "error" in want:
                got["error"] = _pick(t.error, want["error"])
            if "progress" in want:
                got["progress"] = t.progress
            if "startDelayAtLeastMs" in want:
                full = observer.get_task(t.id)
                first = min(full.attempts, key=lambda r: r.attempt, default=None)
                started = first.started_at if first is not None else full.started_at
                delay = -1 if started is None else _ms(started - t.created_at)
                bound = want["startDelayAtLeastMs"]
                # At least as long as asked shows as the bound itself, shorter as it was.
                got["startDelayAtLeastMs"] = bound if delay >= bound else delay
            if "failedAttempts" in want or "retryGapsAtLeastMs" in want:
                full = observer.get_task(t.id)
                records = sorted(full.attempts, key=lambda r: r.attempt)
                if "failedAttempts" in want:
                    got["failedAttempts"] = [r.error.get("name") for r in records]
                if "retryGapsAtLeastMs" in want:
                    starts = [r.started_at for r in records]
                    last = records[-1].attempt if records else 0
                    if full.attempt > last and full.started_at is not None:
                        starts.append(full.started_at)
                    bounds = want["retryGapsAtLeastMs"]
                    gaps = []
                    for i, r in enumerate(records[: len(starts) - 1]):
                        gap = _ms(starts[i + 1] - r.finished_at)
                        bound = bounds[i] if i < len(bounds) else None
                        gaps.append(bound if bound is not None and gap >= bound else gap)
                    got["retryGapsAtLeastMs"] = gaps
            actual_tasks[path] = got
        actual["tasks"] = actual_tasks
        for name, mine in (
            ("runs", run.runs),
            ("steps", run.steps),
            ("cancelSeen", run.cancel_seen),
            ("staleRefused", run.stale_refused),
        ):
            if name in x:
                actual[name] = {k: mine.get(k, 0) for k in x[name]}
        if "maxRunning" in x:
            # Within the bound shows as the bound, above it as it was.
            actual["maxRunning"] = {
                k: most if run.max_running.get(k, 0) <= most else run.max_running[k]
                for k, most in x["maxRunning"].items()
            }
        if "startOrder" in x:
            listed = set(x["startOrder"])
            order: list[str] = []
            for task_id in run.starts:
                started_path = path_by_id.get(task_id)
                if (
                    started_path is not None
                    and started_path in listed
                    and started_path not in order
                ):
                    order.append(started_path)
            actual["startOrder"] = order
        if "progressEvents" in x:
            seen: dict[str, list[Any]] = {p: [] for p in x["progressEvents"]}
            for e in events:
                if e.get("kind") != "progress" or e.get("jobId") != job_id:
                    continue
                path = path_by_id.get(e["taskId"], "")
                if path in seen:
                    seen[path].append(e.get("progress"))
            actual["progressEvents"] = seen
        if "answersLost" in x:
            actual["answersLost"] = sorted(proxy.cut)
            expected["answersLost"] = sorted(x["answersLost"])
        if "jobsInNamespace" in x:
            actual["jobsInNamespace"] = len(observer.list_jobs().items)
        return actual, expected, run.problems
    finally:
        worker.stop()
        if thread is not None:
            thread.join(TIMEOUT)
        stream.close()
        observer.close()
        proxy.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_scenario(spec_server: ServerProcess, scenario: dict[str, Any], flavour: str) -> None:
    actual, expected, problems = run_scenario(scenario, spec_server.url, flavour)
    assert problems == []
    assert actual == expected
