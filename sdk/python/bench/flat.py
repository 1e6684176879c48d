"""The ``flat`` benchmark workload with one Python worker process (``npm run bench --
--python``): N one-task jobs submitted in batches of 1,000, then one worker (concurrency 256)
with a trivial handler, plain (``sync``, on the thread pool) or ``async``, processes them;
timed from the worker's start until no job is running (polled every 5 ms), as bench/run.ts
times the TypeScript remote worker. Prints one JSON line of figures.

    python sdk/python/bench/flat.py URL sync|async N
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from typing import Any

from dynatask import AsyncTaskContext, Client, JobSpec, TaskContext, Worker


def main() -> None:
    url, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = Client(url)
    latencies: list[float] = []
    now = time.time() * 1000
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        client.submit_many([JobSpec("noop", {"t": now}) for _ in range(min(1000, n - i))])
    enqueue_s = time.perf_counter() - t0

    worker = Worker(url, concurrency=int(sys.argv[4]) if len(sys.argv) > 4 else 256, grace=5)
    if mode == "sync":

        @worker.task("noop")
        def noop(ctx: TaskContext, payload: dict[str, Any]) -> None:
            latencies.append(time.time() * 1000 - payload["t"])

    else:

        @worker.task("noop")
        async def anoop(ctx: AsyncTaskContext, payload: dict[str, Any]) -> None:
            latencies.append(time.time() * 1000 - payload["t"])

    thread = threading.Thread(target=worker.run, daemon=True)
    t1 = time.perf_counter()
    thread.start()
    while len(client.list_jobs(state="running", limit=1)) > 0:
        time.sleep(0.005)
    seconds = time.perf_counter() - t1
    worker.stop()
    thread.join(30)
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else float("nan")

    print(
        json.dumps(
            {
                "tasks": n,
                "seconds": round(seconds, 3),
                "tasks_per_s": round(n / seconds),
                "p50_ms": round(pct(50), 2),
                "p99_ms": round(pct(99), 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "enqueue_s": round(enqueue_s, 3),
                "enqueue_per_s": round(n / enqueue_s),
            }
        )
    )


if __name__ == "__main__":
    main()
