"""Handler registration: refused early, with messages naming what is wrong (no server)."""

from __future__ import annotations

import pytest

from dynatask import AsyncTaskContext, Child, TaskContext, ValidationError, Worker


def test_an_unresolvable_payload_annotation_is_refused() -> None:
    w = Worker("http://127.0.0.1:9")

    def register() -> None:
        class Local:
            pass

        @w.task("x")
        def h(ctx: TaskContext, payload: Local) -> None: ...

    with pytest.raises(ValidationError, match="does not resolve"):
        register()


def test_a_worker_without_handlers_does_not_start() -> None:
    with pytest.raises(ValidationError, match="no handlers"):
        Worker("http://127.0.0.1:9").run()


def test_settings_and_payload_kinds() -> None:
    w = Worker("http://127.0.0.1:9")

    @w.task("a", concurrency=2, max_attempts=4, backoff=0.5, timeout=60)
    async def a(ctx: AsyncTaskContext, payload: dict[str, int]) -> None: ...

    @w.task("b")
    def b(ctx: TaskContext) -> None: ...

    assert w.types == ["a", "b"]
    h = w._handlers
    assert h["a"].settings == {
        "type": "a",
        "concurrency": 2,
        "maxAttempts": 4,
        "backoffMs": 500,
        "timeoutMs": 60_000,
    }
    assert h["a"].is_async and h["a"].wants_payload and h["a"].adapter is None
    assert not h["b"].is_async and not h["b"].wants_payload


def test_spawn_keys_and_concurrency_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="go together"):
        Child("t", concurrency_key="k").wire("#0", "children[0]")
    with pytest.raises(ValidationError, match="delay"):
        Child("t", delay=-1).wire("#0", "children[0]")
    assert Child("t", {"n": 1}, delay=1.5, after=["k"]).wire("#3", "c") == {
        "type": "t",
        "payload": {"n": 1},
        "options": {"key": "#3", "after": ["k"], "delayMs": 1500},
    }
