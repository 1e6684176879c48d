"""The synchronous Client against a real server (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import dynatask
from dynatask import (
    AuthError,
    Client,
    ConflictError,
    JobSpec,
    NotFoundError,
    StaleAttemptError,
    TaskFailedError,
    UnreachableError,
    ValidationError,
)
from dynatask._transport import Transport

from .conftest import FreshDatabase, ServerProcess, StartServer, StartTsWorker
from .helpers import event_streams, wait_until

UNSERVED = "nobody-serves-this"


@pytest.fixture
def client(server: ServerProcess, namespace: str) -> Iterator[Client]:
    with Client(server.url, namespace=namespace) as c:
        yield c


def test_submit_is_idempotent_by_job_id(client: Client) -> None:
    job_id = str(uuid.uuid4())
    first = client.submit(UNSERVED, {"n": 1}, job_id=job_id)
    again = client.submit(UNSERVED, {"n": 1}, job_id=job_id)
    assert first.id == job_id and first.created
    assert again.id == job_id and not again.created
    assert again.root_task_id == first.root_task_id
    info = client.get_job(job_id)
    assert info.state == "running" and info.type == UNSERVED
    assert info.counts.queued == 1 and info.total == 1
    assert info.created_at.tzinfo is not None and info.settled_at is None


def test_submit_many_makes_job_ids_and_keeps_order(client: Client, namespace: str) -> None:
    jobs = client.submit_many([JobSpec(UNSERVED, {"i": i}, priority=i, delay=60) for i in range(3)])
    assert [j.created for j in jobs] == [True, True, True]
    assert len({j.id for j in jobs}) == 3
    for i, job in enumerate(jobs):
        root = client.get_task(job.root_task_id)
        assert root.payload == {"i": i} and root.priority == i and root.state == "queued"
        assert root.run_at > root.created_at
    assert client.get_job(jobs[0].id).namespace == namespace


def test_wait_for_result_returns_the_result(
    client: Client, server: ServerProcess, namespace: str, ts_worker: StartTsWorker
) -> None:
    ts_worker(server.url, ["echo"], namespace=namespace)
    job = client.submit("echo", {"hello": "world"})
    assert client.wait_for_result(job.id, timeout=30) == {"hello": "world"}
    info = client.get_job(job.id)
    assert info.state == "succeeded" and info.settled and info.settled_at is not None
    assert info.counts.succeeded == 1


def test_wait_for_result_raises_the_tasks_error(
    client: Client, server: ServerProcess, namespace: str, ts_worker: StartTsWorker
) -> None:
    ts_worker(server.url, ["fail"], namespace=namespace)
    job = client.submit("fail", {"message": "no disk", "final": True})
    with pytest.raises(TaskFailedError) as raised:
        client.wait_for_result(job.id, timeout=30)
    assert raised.value.state == "failed" and raised.value.job_id == job.id
    assert raised.value.error["message"] == "no disk"
    assert raised.value.error["name"] == "NonRetryableError"
    assert "no disk" in str(raised.value)


def test_wait_for_result_times_out(client: Client) -> None:
    job = client.submit(UNSERVED)
    with pytest.raises(TimeoutError):
        client.wait_for_result(job.id, timeout=0.2)


def test_list_jobs_pages_newest_first(client: Client, namespace: str) -> None:
    ids = [client.submit(UNSERVED if i % 2 else "other-unserved").id for i in range(5)]
    first = client.list_jobs(limit=2)
    assert [j.id for j in first] == ids[::-1][:2] and first.next is not None
    second = client.list_jobs(limit=2, cursor=first.next)
    assert [j.id for j in second] == ids[::-1][2:4]
    assert [j.id for j in client.iter_jobs(page_size=2)] == ids[::-1]
    assert [j.id for j in client.iter_jobs(type=UNSERVED)] == [ids[3], ids[1]]
    assert list(client.iter_jobs(state="succeeded")) == []
    assert all(j.namespace == namespace for j in first)
    assert list(client.iter_jobs(namespace=namespace + "-other")) == []


def test_tree_pages_in_creation_order(
    client: Client, server: ServerProcess, namespace: str, ts_worker: StartTsWorker
) -> None:
    ts_worker(server.url, ["parent", "echo"], namespace=namespace)
    job = client.submit("parent", {"children": 3})
    assert client.wait_for_result(job.id, timeout=30) == [{"i": 0}, {"i": 1}, {"i": 2}]
    tasks = list(client.iter_tree(job.id, page_size=2))
    assert [t.type for t in tasks] == ["parent", "echo", "echo", "echo"]
    assert tasks[0].id == job.root_task_id and tasks[0].parent_id is None
    assert [t.key for t in tasks[1:]] == ["#0", "#1", "#2"]
    assert all(t.parent_id == job.root_task_id and t.state == "succeeded" for t in tasks[1:])
    page = client.tree(job.id, limit=3)
    assert len(page) == 3 and page.next is not None
    assert [t.id for t in client.tree(job.id, after=page.next)] == [tasks[3].id]


def test_cancel_job_and_task(client: Client) -> None:
    job = client.submit(UNSERVED)
    assert client.cancel_job(job.id, reason="not needed") is True
    assert client.cancel_job(job.id) is False
    info = client.get_job(job.id)
    assert info.state == "cancelled" and info.counts.cancelled == 1
    with pytest.raises(TaskFailedError) as raised:
        client.wait_for_result(job.id, timeout=5)
    assert raised.value.state == "cancelled"
    other = client.submit(UNSERVED)
    assert client.cancel_task(other.root_task_id) is True
    assert client.get_task(other.root_task_id).state == "cancelled"


def test_retry_task_runs_a_failed_task_again_once(
    client: Client, server: ServerProcess, namespace: str, ts_worker: StartTsWorker
) -> None:
    ts_worker(server.url, ["flaky"], namespace=namespace)
    job = client.submit("flaky", max_attempts=1)
    with pytest.raises(TaskFailedError):
        client.wait_for_result(job.id, timeout=30)
    task = client.get_task(job.root_task_id)
    assert task.state == "failed" and task.attempt == 1
    assert [a.attempt for a in task.attempts] == [1]
    assert task.attempts[0].error["message"] == "first attempt fails"
    assert client.retry_task(job.root_task_id) is True
    assert client.wait_for_result(job.id, timeout=30) == {"attempt": 2}
    # A repeat of the same retry (its answer lost) is known: nothing runs again.
    assert client.retry_task(job.root_task_id, attempt=1) is True
    assert client.get_task(job.root_task_id).attempt == 2
    with pytest.raises(ConflictError) as raised:
        client.retry_task(job.root_task_id)
    assert raised.value.status == 409 and raised.value.code == "conflict"


def test_events_of_a_job_end_with_its_job_event(
    client: Client, server: ServerProcess, namespace: str, ts_worker: StartTsWorker
) -> None:
    job = client.submit("progress", {"steps": 3})
    seen: list[dynatask.Event] = []
    before = event_streams(server.url)
    reader = threading.Thread(target=lambda: seen.extend(client.events(job.id)), daemon=True)
    reader.start()
    wait_until(lambda: event_streams(server.url) > before)
    ts_worker(server.url, ["progress"], namespace=namespace)
    reader.join(30)
    assert not reader.is_alive()
    assert seen[-1].kind == "job" and seen[-1].state == "succeeded" and seen[-1].job_id == job.id
    progress = [e.progress for e in seen if e.kind == "progress"]
    assert progress == [{"done": i, "of": 3} for i in (1, 2, 3)]
    states = [e.state for e in seen if e.kind == "task"]
    assert states[0] == "running" and states[-1] == "succeeded"
    assert all(e.task_id == job.root_task_id for e in seen if e.kind != "job")
    ids = [int(e.id) for e in seen if e.id is not None]
    assert ids == sorted(ids) and len(ids) == len(seen)
    # A late subscriber learns the end at once.
    late = list(client.events(job.id, kinds=["job"]))
    assert [(e.kind, e.state) for e in late] == [("job", "succeeded")]


def test_server_errors_are_exceptions_with_code_and_field(client: Client) -> None:
    with pytest.raises(NotFoundError) as nf:
        client.get_job(str(uuid.uuid4()))
    assert nf.value.status == 404 and nf.value.code == "not_found"
    with pytest.raises(ValidationError) as bad_type:
        client.submit("")
    assert bad_type.value.field == "/jobs/0/type" and bad_type.value.status == 400
    with pytest.raises(ValidationError) as bad_limit:
        client.list_jobs(limit=0)
    assert bad_limit.value.field == "/limit"
    with pytest.raises(ValidationError) as bad_id:
        client.get_job("not-a-uuid")
    assert bad_id.value.code == "invalid_request"
    with pytest.raises(ValidationError) as local:
        client.submit(UNSERVED, delay=-1)
    assert local.value.field == "delay"
    with pytest.raises(NotFoundError):
        list(client.events(str(uuid.uuid4())))


def test_a_stale_attempt_token_is_refused(client: Client, namespace: str) -> None:
    job = client.submit("claimed-by-hand")
    with Transport(client.url) as t:
        claim = t.call(
            "POST",
            "/v1/worker/claim",
            {"namespace": namespace, "types": ["claimed-by-hand"], "limit": 1},
        )
        task = claim["tasks"][0]
        assert task["id"] == job.root_task_id
        t.call("POST", "/v1/worker/progress", {**_ref(task), "progress": 1})
        with pytest.raises(StaleAttemptError) as raised:
            t.call(
                "POST",
                "/v1/worker/progress",
                {"id": task["id"], "token": task["token"] + 1, "progress": 2},
            )
        assert raised.value.status == 409 and raised.value.code == "stale_attempt"


def _ref(task: dict[str, object]) -> dict[str, object]:
    return {"id": task["id"], "token": task["token"]}


def test_tokens_unauthorized_and_forbidden(start_server: StartServer) -> None:
    operator = "op-secret-0123456789"
    viewer = "viewer-secret-0123456789"
    srv = start_server(tokens=[f"ops:operator:{operator}", f"view:viewer:{viewer}"])
    with Client(srv.url) as anonymous, pytest.raises(AuthError) as unauthorized:
        anonymous.submit(UNSERVED)
    assert unauthorized.value.status == 401 and unauthorized.value.code == "unauthorized"
    with Client(srv.url, token=viewer) as c, pytest.raises(AuthError) as forbidden:
        c.submit(UNSERVED)
    assert forbidden.value.status == 403 and forbidden.value.code == "forbidden"
    with Client(srv.url, token=operator) as c:
        job = c.submit(UNSERVED)
    with Client(srv.url, token=viewer) as c:
        assert c.get_job(job.id).state == "running"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_call_made_before_the_server_starts_is_retried(
    start_server: StartServer, fresh_database: FreshDatabase
) -> None:
    port = _free_port()
    retried = threading.Event()
    answer: list[object] = []
    with Transport(f"http://127.0.0.1:{port}", retry_for=60) as t:
        caller = threading.Thread(
            target=lambda: answer.append(
                t.call(
                    "POST",
                    "/v1/jobs",
                    {"jobs": [{"type": UNSERVED}]},
                    on_retry=lambda e: retried.set(),
                )
            ),
            daemon=True,
        )
        caller.start()
        assert retried.wait(10), "the call was not retried"
        srv = start_server(database=fresh_database(), port=port)
        caller.join(30)
    assert not caller.is_alive()
    with Client(srv.url) as c:
        jobs = list(c.iter_jobs())
    assert len(jobs) == 1  # made once


def test_calls_survive_a_server_restart(
    start_server: StartServer, fresh_database: FreshDatabase
) -> None:
    srv = start_server(database=fresh_database())
    with Client(srv.url) as c:
        job = c.submit(UNSERVED)
        srv.stop()
        # The server is down: this call fails to connect until it is back.
        result: list[dynatask.JobInfo] = []
        caller = threading.Thread(target=lambda: result.append(c.get_job(job.id)), daemon=True)
        caller.start()
        srv.start(srv.port)
        caller.join(30)
        assert result and result[0].id == job.id
        # The keep-alive connection of before the restart is gone: the next call reconnects.
        assert c.get_job(job.id).state == "running"


def test_unreachable_after_retry_for() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with Client(url, retry_for=0.3) as c, pytest.raises(UnreachableError) as raised:
        c.get_job(str(uuid.uuid4()))
    assert raised.value.code == "unreachable" and raised.value.status == 0
    assert url in str(raised.value)


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own on a SQLite file (whatever the session's store)."""
    srv = ServerProcess(database=str(tmp_path / "own.db"), args=["--grace-ms", "500"]).start()
    yield srv
    srv.stop()


def test_a_503_is_retried(sqlite_server: ServerProcess) -> None:
    """A real 503: the SQLite database is locked by another connection's transaction past the
    server's busy timeout (10 s); the call is retried and succeeds once the lock is gone."""
    srv = sqlite_server
    database = srv.database
    lock = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    retried: list[Exception] = []
    answer: list[object] = []
    got_503 = threading.Event()

    def on_retry(e: Exception) -> None:
        retried.append(e)
        got_503.set()

    with Transport(srv.url, retry_for=60) as t:
        lock.execute("BEGIN EXCLUSIVE")
        caller = threading.Thread(
            target=lambda: answer.append(
                t.call("POST", "/v1/jobs", {"jobs": [{"type": UNSERVED}]}, on_retry=on_retry)
            ),
            daemon=True,
        )
        caller.start()
        try:
            assert got_503.wait(30), "no 503 came"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        caller.join(30)
    assert isinstance(retried[0], dynatask.DynataskError)
    assert retried[0].status == 503
    assert retried[0].code == "unavailable"
    assert answer, "the call did not succeed after the lock was released"


def test_submit_many_splits_a_request_over_the_body_limit(start_server: StartServer) -> None:
    srv = start_server("--body-limit", "4k")
    specs = [JobSpec(UNSERVED, {"blob": "x" * 300, "i": i}) for i in range(40)]  # ~16 kB
    with Client(srv.url) as c:
        jobs = c.submit_many(specs)
        assert [c.get_task(j.root_task_id).payload["i"] for j in jobs] == list(range(40))
        assert len(list(c.iter_jobs())) == 40
        with pytest.raises(dynatask.PayloadTooLargeError) as raised:
            c.submit(UNSERVED, {"blob": "x" * 5000})
    assert raised.value.status == 413
