"""Conversions of Python values to the wire (no server needed)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone

import pydantic
import pytest

from dynatask import ValidationError
from dynatask._convert import duration_ms, instant_ms, jsonable, submit_options, uuid7
from dynatask.errors import (
    AuthError,
    ConflictError,
    DynataskError,
    NotFoundError,
    PayloadTooLargeError,
    StaleAttemptError,
    error_from_response,
)


def test_durations_are_seconds_or_timedeltas_in_whole_ms() -> None:
    assert duration_ms(1.5, "delay") == 1500
    assert duration_ms(timedelta(minutes=1), "delay") == 60_000
    assert duration_ms(0.0001, "delay") == 1  # never rounded down to nothing
    assert duration_ms(0, "delay") == 0
    for bad in (-1, float("nan"), float("inf"), True):
        with pytest.raises(ValidationError) as raised:
            duration_ms(bad, "delay")
        assert raised.value.field == "delay"


def test_instants_are_aware_datetimes_or_epoch_seconds() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert instant_ms(at, "run_at") == round(at.timestamp() * 1000)
    assert instant_ms(1_700_000_000.25, "run_at") == 1_700_000_000_250
    with pytest.raises(ValidationError):
        instant_ms(datetime(2030, 1, 2), "run_at")


def test_submit_options_use_the_wire_names() -> None:
    assert submit_options(
        namespace="ns",
        job_id="j",
        priority=5,
        delay=2,
        max_attempts=4,
        backoff=0.5,
        max_backoff=timedelta(seconds=30),
        timeout=10,
        concurrency_key="k",
        concurrency_limit=2,
    ) == {
        "namespace": "ns",
        "jobId": "j",
        "priority": 5,
        "delayMs": 2000,
        "maxAttempts": 4,
        "backoffMs": 500,
        "maxBackoffMs": 30_000,
        "timeoutMs": 10_000,
        "concurrency": {"key": "k", "limit": 2},
    }
    with pytest.raises(ValidationError):
        submit_options(concurrency_key="k")


def test_uuid7_is_a_v7_uuid_monotonic_within_the_process() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_payloads_may_be_dataclasses_or_pydantic_models() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    class Image(pydantic.BaseModel):
        url: str
        size: Point

    assert jsonable(Point(1, 2)) == {"x": 1, "y": 2}
    assert jsonable(Image(url="u", size=Point(3, 4))) == {"url": "u", "size": {"x": 3, "y": 4}}
    assert jsonable({"a": 1}) == {"a": 1}


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_request", ValidationError),
        (413, "payload_too_large", PayloadTooLargeError),
        (404, "not_found", NotFoundError),
        (409, "stale_attempt", StaleAttemptError),
        (409, "conflict", ConflictError),
        (401, "unauthorized", AuthError),
        (403, "forbidden", AuthError),
        (503, "unavailable", DynataskError),
    ],
)
def test_errors_map_by_code(status: int, code: str, cls: type[DynataskError]) -> None:
    err = error_from_response(status, {"error": {"code": code, "message": "m", "field": "/x"}})
    assert type(err) is cls
    assert (err.status, err.code, err.message) == (status, code, "m")
    if isinstance(err, ValidationError):
        assert err.field == "/x"


def test_an_answer_without_an_error_body_still_maps() -> None:
    err = error_from_response(404, "<html>")
    assert isinstance(err, NotFoundError)
    assert err.message == "HTTP 404"
