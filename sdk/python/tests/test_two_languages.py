"""Two languages, one job: a TypeScript process serves the root type, a Python worker process
the child types, whose children are of a TypeScript type again; then the same with the Python
worker killed by SIGKILL mid-job and a new one started. On SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, ServerProcess, StartServer
from .worker_helpers import Api

FIXTURES = Path(__file__).parent / "fixtures"
CHILDREN = 12
LEAVES = 2


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    # A short lease: the killed worker's tasks are retried within seconds.
    return start_server("--lease-ms", "2000")


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, args: list[str]) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.procs.append(p)
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        assert line == "ready", (
            f"{args[:2]} did not start: {line}{p.stdout.read() if p.poll() is not None else ''}"
        )
        return p

    def ts(self, url: str, ns: str) -> subprocess.Popen[str]:
        return self.start(["node", str(FIXTURES / "ts_worker.mjs"), url, ns])

    def py(self, url: str, ns: str, delay: float = 0.0) -> subprocess.Popen[str]:
        return self.start([sys.executable, str(FIXTURES / "py_worker.py"), url, ns, str(delay)])

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def procs() -> Iterator[Processes]:
    p = Processes()
    yield p
    p.close()


def expected_sum() -> int:
    return sum(2 * (n * 10 + j) for n in range(CHILDREN) for j in range(LEAVES))


def check_tree(api: Api, job_id: str) -> list[dict[str, Any]]:
    tree = api.tree(job_id)
    assert Counter(t["type"] for t in tree) == {
        "tree": 1,
        "py_mid": CHILDREN,
        "ts_leaf": CHILDREN * LEAVES,
    }, "no task lost, no child created twice"
    keys = Counter((t["parentId"], t["key"]) for t in tree if t["parentId"])
    assert max(keys.values()) == 1
    assert {t["state"] for t in tree} == {"succeeded"}
    return tree


def test_one_job_across_typescript_and_python(server: ServerProcess, procs: Processes) -> None:
    api = Api(server.url)
    ns = f"t{uuid.uuid4().hex[:12]}"
    ts = procs.ts(server.url, ns)
    py = procs.py(server.url, ns)
    job = api.settled(api.submit("tree", {"children": CHILDREN, "leaves": LEAVES}, namespace=ns))
    assert job["state"] == "succeeded", job
    assert job["result"] == {
        "sum": expected_sum(),
        "midPids": [py.pid],
        "leafPids": [ts.pid],
        "rootPid": ts.pid,
    }, "each process served only its own types"
    check_tree(api, job["id"])


def test_the_python_worker_killed_mid_job(server: ServerProcess, procs: Processes) -> None:
    api = Api(server.url)
    ns = f"t{uuid.uuid4().hex[:12]}"
    ts = procs.ts(server.url, ns)
    first = procs.py(server.url, ns, delay=0.3)
    job_id = api.submit("tree", {"children": CHILDREN, "leaves": LEAVES}, namespace=ns)

    def mid_states() -> Counter[str]:
        return Counter(t["state"] for t in api.tree(job_id) if t["type"] == "py_mid")

    # Killed once some children are done and others are held by it.
    api.until(
        "some py_mid done, some running",
        lambda: (s := mid_states())["succeeded"] >= 2 and s["running"] >= 1,
    )
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = procs.py(server.url, ns)
    job = api.settled(job_id, timeout=90)
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["sum"] == expected_sum()
    assert set(result["midPids"]) == {first.pid, second.pid}
    assert result["leafPids"] == [ts.pid]
    tree = check_tree(api, job_id)
    # The killed worker's attempts were lost with it and retried by the new one.
    assert max(t["attempt"] for t in tree if t["type"] == "py_mid") >= 2
