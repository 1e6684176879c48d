"""Fixtures that run the SDK against a real ``dynatask server`` process.

- ``store``: ``"sqlite"`` and ``"postgres"`` (the session's tests run on both). PostgreSQL is
  the server in ``$DYNATASK_TEST_POSTGRES_URL`` (``npm test`` always sets it); without one the
  Postgres half fails loudly when ``CI=true`` and is skipped otherwise (a local run).
- ``server``: one server per store for the session (tests isolate themselves by namespace or
  job id); ``start_server``: a factory for servers of their own (fresh database, restarts,
  tokens, short leases), stopped at the end of the test.
- ``fresh_database``: a factory of fresh databases of the store (a SQLite file, or a schema of
  its own on PostgreSQL, dropped at the end of the session).
- ``ts_worker``: a factory of TypeScript remote worker processes (tests/ts/worker.ts) serving
  the given types, so jobs submitted from Python run.

The server is ``node bin/dynatask.js server`` from the repository (``npm run build`` first, so
dist/ is current: ``npm test`` and ``npm run test:python`` do).
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BIN = REPO / "bin" / "dynatask.js"
TS_WORKER = Path(__file__).resolve().parent / "ts" / "worker.ts"
STARTUP_TIMEOUT = 30.0


def postgres_url() -> str | None:
    """The PostgreSQL server of the tests, if the environment gives one."""
    for name in ("DYNATASK_TEST_POSTGRES_URL", "DYNATASK_DATABASE_URL"):
        value = os.environ.get(name, "")
        if value.startswith(("postgres://", "postgresql://")):
            return value
    return None


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


class _Output:
    """Drains a process's stdout (so it never blocks on a full pipe), keeping its last lines
    and waiting for one that matches."""

    def __init__(self, proc: subprocess.Popen[str], name: str) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self._cond = threading.Condition()
        self._proc = proc
        self._done = False
        self._thread = threading.Thread(target=self._drain, name=f"drain {name}", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def wait_for(
        self, match: Callable[[dict[str, object]], bool], timeout: float
    ) -> dict[str, object]:
        seen = 0
        with self._cond:
            while True:
                for line in list(self.lines)[seen:]:
                    seen += 1
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(obj, dict) and match(obj):
                        return obj
                if self._done:
                    raise RuntimeError("the process ended:\n" + self.tail())
                if not self._cond.wait(timeout):
                    raise TimeoutError("no such line in time:\n" + self.tail())

    def tail(self) -> str:
        return "\n".join(list(self.lines)[-40:])


@dataclass
class ServerProcess:
    """A running ``dynatask server``."""

    database: str
    args: list[str]
    url: str = ""
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    output: _Output | None = None
    tokens: list[str] = field(default_factory=list)

    def start(self, port: int | None = None) -> ServerProcess:
        cmd = [
            "node",
            str(BIN),
            "server",
            "--port",
            str(self.port if port is None else port),
            "--database",
            self.database,
            *self.args,
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = _Output(self.proc, "server")
        line = self.output.wait_for(
            lambda o: o.get("msg") == "dynatask server listening", STARTUP_TIMEOUT
        )
        self.url = str(line["url"])
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Sends ``sig`` and waits for the exit; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> ServerProcess:
        """Stops the server and starts it again on the same port and database."""
        self.stop()
        return self.start(self.port)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> str:
    """The store the server runs on."""
    name = str(request.param)
    if name == "postgres" and postgres_url() is None:
        message = (
            "no PostgreSQL for the Postgres half of the Python tests: run them with `npm test` "
            "or `npm run test:python` (which start a private server), or set "
            "DYNATASK_TEST_POSTGRES_URL to a postgres:// URL"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return name


class _Schemas:
    """Fresh Postgres schemas, dropped together at the end of the session (through node's pg,
    so the SDK's tests need no Postgres driver of their own)."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def fresh(self) -> str:
        name = f"py_{os.getpid()}_{secrets.token_hex(5)}"
        self.created.append(name)
        return name

    def drop_all(self) -> None:
        url = postgres_url()
        if not self.created or url is None:
            return
        names = ", ".join(f'"{n}"' for n in self.created)
        script = (
            "import pg from 'pg';"
            "const c = new pg.Client({connectionString: process.argv[1]});"
            f"await c.connect(); await c.query('DROP SCHEMA IF EXISTS {names} CASCADE');"
            "await c.end();"
        )
        subprocess.run(
            ["node", "--input-type=module", "-e", script, url],
            cwd=REPO,
            check=False,
            capture_output=True,
            timeout=60,
        )
        self.created.clear()


@pytest.fixture(scope="session")
def _schemas() -> Iterator[_Schemas]:
    schemas = _Schemas()
    yield schemas
    schemas.drop_all()


FreshDatabase = Callable[[], str]


@pytest.fixture(scope="session")
def fresh_database(
    store: str, tmp_path_factory: pytest.TempPathFactory, _schemas: _Schemas
) -> FreshDatabase:
    """Makes a fresh, empty database of the store: its ``--database`` argument."""

    def make() -> str:
        if store == "postgres":
            url = postgres_url()
            assert url is not None
            return with_schema(url, _schemas.fresh())
        return str(tmp_path_factory.mktemp("db") / "dynatask.db")

    return make


def _start(database: str, args: Sequence[str], port: int = 0) -> ServerProcess:
    return ServerProcess(database=database, args=list(args), port=port).start()


@pytest.fixture(scope="session")
def server(fresh_database: FreshDatabase) -> Iterator[ServerProcess]:
    """One server per store for the session."""
    srv = _start(fresh_database(), ["--grace-ms", "500"])
    yield srv
    srv.stop()


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(fresh_database: FreshDatabase) -> Iterator[StartServer]:
    """``start_server(*args, database=None, tokens=())``: a server of the test's own (a fresh
    database unless one is given; ``tokens`` as ``name:scopes:secret``), stopped at the end."""
    started: list[ServerProcess] = []

    def start(
        *args: str, database: str | None = None, tokens: Sequence[str] = (), port: int = 0
    ) -> ServerProcess:
        extra = [a for t in tokens for a in ("--token", t)]
        srv = _start(database or fresh_database(), ["--grace-ms", "500", *extra, *args], port)
        srv.tokens = list(tokens)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[str]
    output: _Output

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


StartTsWorker = Callable[..., WorkerProcess]


@pytest.fixture
def ts_worker() -> Iterator[StartTsWorker]:
    """``ts_worker(url, types, namespace=None)``: a TypeScript remote worker process serving
    ``types`` with the handlers of tests/ts/worker.ts, stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(url: str, types: Sequence[str], namespace: str | None = None) -> WorkerProcess:
        config: dict[str, object] = {"url": url, "types": list(types)}
        if namespace is not None:
            config["namespace"] = namespace
        proc = subprocess.Popen(
            ["node", "--import", "tsx", str(TS_WORKER), json.dumps(config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        worker = WorkerProcess(proc, _Output(proc, "ts worker"))
        started.append(worker)
        worker.output.wait_for(lambda o: o.get("ready") is True, STARTUP_TIMEOUT)
        return worker

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def namespace() -> str:
    """A namespace of the test's own, so listings see only its jobs."""
    return f"t-{uuid.uuid4().hex[:12]}"


def pytest_report_header() -> list[str]:
    return [
        f"dynatask server: node {BIN.relative_to(REPO)} (python {sys.version.split()[0]})",
        f"postgres: {'given' if postgres_url() else 'none (the Postgres half is skipped)'}",
    ]
