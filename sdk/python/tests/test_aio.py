"""The asyncio AsyncClient against a real server (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from dynatask import (
    AsyncClient,
    ConflictError,
    Event,
    JobSpec,
    NotFoundError,
    TaskFailedError,
    UnreachableError,
    ValidationError,
)
from dynatask._convert import uuid7
from dynatask._transport import AsyncTransport

from .conftest import FreshDatabase, ServerProcess, StartServer, StartTsWorker
from .helpers import event_streams, wait_until

UNSERVED = "nobody-serves-this"


@pytest.fixture
async def client(server: ServerProcess, namespace: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url, namespace=namespace) as c:
        yield c


async def test_submit_get_list_and_tree(client: AsyncClient) -> None:
    job_id = uuid7()  # listings sort by id: v7 ids sort by time
    first = await client.submit(UNSERVED, {"n": 1}, job_id=job_id)
    again = await client.submit(UNSERVED, job_id=job_id)
    assert first.created
    assert not again.created
    assert again.root_task_id == first.root_task_id
    more = await client.submit_many([JobSpec(UNSERVED, i) for i in range(3)])
    info = await client.get_job(job_id)
    assert info.counts.queued == 1
    listed = [j.id async for j in client.iter_jobs(page_size=2)]
    assert listed == [j.id for j in reversed(more)] + [job_id]
    page = await client.list_jobs(limit=1)
    assert [j.id for j in page] == [more[-1].id]
    tree = [t async for t in client.iter_tree(job_id)]
    assert [t.id for t in tree] == [first.root_task_id]
    assert (await client.get_task(first.root_task_id)).payload == {"n": 1}
    types = {t.type: t for t in await client.types()}
    assert types[UNSERVED].queued == 4
    assert not types[UNSERVED].served


async def test_results_failures_cancel_and_retry(
    client: AsyncClient, server: ServerProcess, namespace: str, ts_worker: StartTsWorker
) -> None:
    ts_worker(server.url, ["echo", "fail", "flaky"], namespace=namespace)
    ok, bad, flaky = await asyncio.gather(
        client.submit("echo", [1, 2]),
        client.submit("fail", {"message": "bad input", "final": True}),
        client.submit("flaky", max_attempts=1),
    )
    assert await client.wait_for_result(ok.id, timeout=30) == [1, 2]
    with pytest.raises(TaskFailedError) as raised:
        await client.wait_for_result(bad.id, timeout=30)
    assert raised.value.error["message"] == "bad input"
    with pytest.raises(TaskFailedError):
        await client.wait_for_result(flaky.id, timeout=30)
    assert await client.retry_task(flaky.root_task_id) is True
    assert await client.wait_for_result(flaky.id, timeout=30) == {"attempt": 2}
    with pytest.raises(ConflictError):
        await client.retry_task(flaky.root_task_id)
    queued = await client.submit(UNSERVED)
    assert await client.cancel_job(queued.id) is True
    assert await client.cancel_task(queued.root_task_id) is False
    with pytest.raises(TaskFailedError) as cancelled:
        await client.wait_for_result(queued.id, timeout=5)
    assert cancelled.value.state == "cancelled"


async def test_events_async(
    client: AsyncClient, server: ServerProcess, namespace: str, ts_worker: StartTsWorker
) -> None:
    job = await client.submit("progress", {"steps": 2})
    before = event_streams(server.url)

    async def read() -> list[Event]:
        return [e async for e in client.events(job.id, kinds=["progress", "job"])]

    reader = asyncio.ensure_future(read())
    # The stream is open once the server counts it.
    await asyncio.to_thread(wait_until, lambda: event_streams(server.url) > before)
    ts_worker(server.url, ["progress"], namespace=namespace)
    seen = await asyncio.wait_for(reader, 30)
    assert [e.kind for e in seen] == ["progress", "progress", "job"]
    assert [e.progress for e in seen[:2]] == [{"done": 1, "of": 2}, {"done": 2, "of": 2}]
    assert seen[-1].state == "succeeded"


async def test_errors_async(client: AsyncClient) -> None:
    with pytest.raises(NotFoundError):
        await client.get_job(str(uuid.uuid4()))
    with pytest.raises(ValidationError) as bad:
        await client.submit(UNSERVED, max_attempts=0)
    assert bad.value.field == "/jobs/0/options/maxAttempts"
    with pytest.raises(NotFoundError):
        [e async for e in client.events(str(uuid.uuid4()))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_async_call_before_the_server_starts_is_retried(
    start_server: StartServer, fresh_database: FreshDatabase
) -> None:
    port = _free_port()
    retried = asyncio.Event()
    async with AsyncTransport(f"http://127.0.0.1:{port}", retry_for=60) as t:
        call = asyncio.ensure_future(
            t.call(
                "POST", "/v1/jobs", {"jobs": [{"type": UNSERVED}]}, on_retry=lambda e: retried.set()
            )
        )
        await asyncio.wait_for(retried.wait(), 10)
        srv = await asyncio.to_thread(start_server, database=fresh_database(), port=port)
        answer = await asyncio.wait_for(call, 30)
    assert answer["jobs"][0]["created"] is True
    async with AsyncClient(srv.url) as c:
        assert len([j async for j in c.iter_jobs()]) == 1


async def test_async_unreachable() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    async with AsyncClient(url, retry_for=0.3) as c:
        with pytest.raises(UnreachableError) as raised:
            await c.get_job(str(uuid.uuid4()))
        assert not await c.ready()
    assert url in str(raised.value)


async def test_async_submit_many_splits_over_the_body_limit(start_server: StartServer) -> None:
    srv = await asyncio.to_thread(start_server, "--body-limit", "4k")
    async with AsyncClient(srv.url) as c:
        jobs = await c.submit_many([JobSpec(UNSERVED, {"blob": "x" * 300}) for _ in range(20)])
        assert len({j.id for j in jobs}) == 20
        assert len([j async for j in c.iter_jobs()]) == 20
