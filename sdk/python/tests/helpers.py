"""Small helpers of the tests (waiting on observable conditions, reading server metrics)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx


def wait_until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Polls ``cond`` (a cheap check of something observable) until it holds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold within {timeout} s")
        time.sleep(delay)
        delay = min(0.1, delay * 2)


def event_streams(url: str) -> int:
    """The server's open event streams (its ``dynatask_event_streams`` gauge)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    m = re.search(r"^dynatask_event_streams(?:\{[^}]*\})? (\d+(?:\.\d+)?)$", text, re.M)
    return int(float(m.group(1))) if m else 0
