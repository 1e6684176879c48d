"""Benchmark workloads with one Python worker process (``npm run bench -- --python``), as
bench/workloads.ts runs them with the TypeScript remote worker. Prints one JSON line.

    python sdk/python/bench/workloads.py URL flat|latency sync|async N

- ``flat``: N one-task jobs submitted in batches of 1,000, then one worker (concurrency 256)
  with a trivial handler, plain (``sync``, on the thread pool) or ``async``, processes them;
  timed from the worker's start until no job is running (polled every 5 ms). The latency is
  queueing time: from before the submissions to each handler's start.
- ``latency``: an idle worker; N single submissions, each once the previous one's handler
  started, 5 ms apart; the latency is from the submit call to the handler starting.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from dynatask import AsyncTaskContext, Client, JobSpec, TaskContext, Worker


def worker_with(url: str, mode: str, record: Callable[[dict[str, Any]], None]) -> Worker:
    worker = Worker(url, concurrency=256, grace=5)
    if mode == "sync":

        @worker.task("noop")
        def noop(ctx: TaskContext, payload: dict[str, Any]) -> None:
            record(payload)

    else:

        @worker.task("noop")
        async def anoop(ctx: AsyncTaskContext, payload: dict[str, Any]) -> None:
            record(payload)

    return worker


def start(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def flat(url: str, mode: str, n: int) -> dict[str, float]:
    client = Client(url)
    latencies: list[float] = []
    now = time.time() * 1000
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        client.submit_many([JobSpec("noop", {"t": now}) for _ in range(min(1000, n - i))])
    enqueue_s = time.perf_counter() - t0
    worker = worker_with(url, mode, lambda p: latencies.append(time.time() * 1000 - p["t"]))
    t1 = time.perf_counter()
    thread = start(worker)
    while len(client.list_jobs(state="running", limit=1)) > 0:
        time.sleep(0.005)
    seconds = time.perf_counter() - t1
    worker.stop()
    thread.join(30)
    return {
        **figures(n, seconds, latencies),
        "enqueue_s": round(enqueue_s, 3),
        "enqueue_per_s": round(n / enqueue_s),
    }


def latency(url: str, mode: str, n: int) -> dict[str, float]:
    client = Client(url)
    latencies: list[float] = []
    started = threading.Event()

    def record(payload: dict[str, Any]) -> None:
        latencies.append(time.perf_counter() * 1000 - payload["t"])
        started.set()

    worker = worker_with(url, mode, record)
    thread = start(worker)
    while not worker.ready:
        time.sleep(0.01)
    t0 = time.perf_counter()
    for _ in range(n):
        started.clear()
        client.submit("noop", {"t": time.perf_counter() * 1000})
        started.wait(30)
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    worker.stop()
    thread.join(30)
    return figures(n, seconds, latencies)


def figures(n: int, seconds: float, latencies: list[float]) -> dict[str, float]:
    lat = sorted(latencies)
    usage = resource.getrusage(resource.RUSAGE_SELF)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")

    return {
        "tasks": n,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(n / seconds),
        "p50_ms": round(pct(50), 2),
        "p99_ms": round(pct(99), 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


if __name__ == "__main__":
    url, workload, mode, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    run = {"flat": flat, "latency": latency}[workload]
    print(json.dumps(run(url, mode, size)))
