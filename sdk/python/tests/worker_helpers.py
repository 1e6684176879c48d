"""Helpers of the worker tests: a Worker run on a thread of its own, and the operator calls
they check the server with (the raw transport; no mocks of the server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from dynatask import Worker
from dynatask._transport import Transport


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
