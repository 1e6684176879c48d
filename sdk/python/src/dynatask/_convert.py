"""Conversions between Python values and the wire: durations, times, ids, submission options."""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from . import _wire
from .errors import ValidationError

__all__ = [
    "Duration",
    "Instant",
    "datetime_from_ms",
    "duration_ms",
    "instant_ms",
    "submit_options",
    "uuid7",
]

Duration = float | int | timedelta
"""A duration: seconds (``int`` or ``float``) or a :class:`~datetime.timedelta`."""

Instant = datetime | float | int
"""A point in time: an aware :class:`~datetime.datetime`, or epoch seconds."""


def duration_ms(value: Duration, field: str) -> int:
    """A duration in whole milliseconds (rounded up, so a positive duration never becomes 0)."""
    if isinstance(value, bool):
        raise ValidationError(f"{field} must be seconds or a timedelta, not a bool", field=field)
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    else:
        raise ValidationError(f"{field} must be seconds or a timedelta", field=field)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValidationError(f"{field} must be a finite, non-negative duration", field=field)
    return math.ceil(round(seconds * 1000, 6))


def instant_ms(value: Instant, field: str) -> int:
    """A point in time as epoch milliseconds (a naive datetime is refused: its zone is unknown)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError(f"{field} must be an aware datetime (with tzinfo)", field=field)
        return round(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{field} must be a datetime or epoch seconds", field=field)
    return round(float(value) * 1000)


def datetime_from_ms(ms: int) -> datetime:
    """An aware UTC datetime from epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def maybe_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime_from_ms(ms)


_ids_lock = threading.Lock()
_last_ms = 0
_seq = 0


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of epoch milliseconds, a 12-bit sequence, random bits.

    Monotonic within the process, as the TypeScript ids (src/engine/ids.ts): ids made in one
    millisecond count up, so jobs submitted in order list in order.
    """
    global _last_ms, _seq
    with _ids_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            _seq += 1
            if _seq > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                _last_ms += 1
                _seq = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _seq = 0
        seq = _seq
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand
    return str(uuid.UUID(int=value))


def submit_options(
    *,
    namespace: str | None = None,
    job_id: str | None = None,
    priority: int | None = None,
    run_at: Instant | None = None,
    delay: Duration | None = None,
    max_attempts: int | None = None,
    backoff: Duration | None = None,
    max_backoff: Duration | None = None,
    timeout: Duration | None = None,
    concurrency_key: str | None = None,
    concurrency_limit: int | None = None,
) -> _wire.SubmitOptions:
    """The wire's ``SubmitOptions`` from Python keyword arguments (durations in seconds)."""
    opts: _wire.SubmitOptions = {}
    if namespace is not None:
        opts["namespace"] = namespace
    if job_id is not None:
        opts["jobId"] = str(job_id)
    if priority is not None:
        opts["priority"] = priority
    if run_at is not None:
        opts["runAt"] = instant_ms(run_at, "run_at")
    if delay is not None:
        opts["delayMs"] = duration_ms(delay, "delay")
    if max_attempts is not None:
        opts["maxAttempts"] = max_attempts
    if backoff is not None:
        opts["backoffMs"] = duration_ms(backoff, "backoff")
    if max_backoff is not None:
        opts["maxBackoffMs"] = duration_ms(max_backoff, "max_backoff")
    if timeout is not None:
        opts["timeoutMs"] = duration_ms(timeout, "timeout")
    if (concurrency_key is None) != (concurrency_limit is None):
        raise ValidationError(
            "concurrency_key and concurrency_limit go together", field="concurrency_key"
        )
    if concurrency_key is not None and concurrency_limit is not None:
        opts["concurrency"] = {"key": concurrency_key, "limit": concurrency_limit}
    return opts


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: pydantic models and dataclasses are dumped."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value
