"""Real ``dynatask server`` processes for the worker tests, on SQLite or PostgreSQL, and
helpers that talk to them with the raw transport (no mocks of the server)."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynatask import Worker
from dynatask._transport import Transport

REPO = Path(__file__).resolve().parents[3]
BIN = REPO / "bin" / "dynatask.js"


def postgres_url() -> str:
    for v in (
        os.environ.get("DYNATASK_TEST_POSTGRES_URL"),
        os.environ.get("DYNATASK_DATABASE_URL"),
    ):
        if v and v.startswith(("postgres://", "postgresql://")):
            return v
    raise RuntimeError(
        "no PostgreSQL for the Postgres tests: run them under `node scripts/postgres.mjs -- ...` "
        "or set DYNATASK_TEST_POSTGRES_URL (they never skip)"
    )


def database_for(store: str, tmp: Path) -> str:
    if store == "sqlite":
        return str(tmp / "dynatask.db")
    url = postgres_url()
    schema = f"py_{os.getpid()}_{secrets.token_hex(4)}"
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


@dataclass
class Server:
    """A ``dynatask server`` process; ``url`` once it listens."""

    database: str
    lease_ms: int = 30_000
    url: str = ""
    proc: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            ["node", str(BIN), "server", "--port", "0", "--database", self.database,
             "--lease-ms", str(self.lease_ms), "--log-level", "info"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )  # fmt: skip
        assert self.proc.stdout is not None
        import json

        for line in self.proc.stdout:
            self.log.append(line)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("msg") == "dynatask server listening":
                self.url = str(msg["url"])
                break
        if not self.url:
            raise RuntimeError("dynatask server did not start:\n" + "".join(self.log))
        threading.Thread(target=self._drain_output, daemon=True).start()
        return self

    def _drain_output(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            del self.log[:-200]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def serve(worker: Worker) -> Iterator[Worker]:
    """Runs ``worker`` on a thread of its own until the caller is done, then drains it."""
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not worker.ready:
        if not t.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the worker did not start")
        time.sleep(0.01)
    try:
        yield worker
    finally:
        worker.stop()
        t.join(40)


class Api:
    """The server's operator calls the tests need, over the SDK's transport."""

    def __init__(self, url: str) -> None:
        self.t = Transport(url)

    def submit(self, type: str, payload: Any = None, **options: Any) -> str:
        job: dict[str, Any] = {"type": type, "options": options}
        if payload is not None:
            job["payload"] = payload
        r = self.t.call("POST", "/v1/jobs", {"jobs": [job]})
        return str(r["jobs"][0]["jobId"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.t.call("GET", f"/v1/jobs/{job_id}"))

    def tree(self, job_id: str) -> list[dict[str, Any]]:
        r = self.t.call("GET", f"/v1/jobs/{job_id}/tasks", params={"limit": 10000})
        return list(r["tasks"])

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self.t.call("GET", f"/v1/tasks/{task_id}"))

    def cancel(self, job_id: str) -> None:
        self.t.call("POST", f"/v1/jobs/{job_id}/cancel", {})

    def settled(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        """The job once it settled: polled, from every 20 ms up to every 200 ms."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            job = self.job(job_id)
            if job["state"] != "running":
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still running after {timeout} s: {job}")
            time.sleep(delay)
            delay = min(0.2, delay * 1.5)

    def until(self, what: str, check: Any, timeout: float = 30) -> Any:
        """Polls ``check()`` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            v = check()
            if v:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout} s")
            time.sleep(0.05)
