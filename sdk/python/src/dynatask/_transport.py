"""JSON over HTTP to a dynatask server.

One keep-alive connection pool (httpx), the bearer token, retries of calls that are safe to
repeat (every call of the protocol is: submissions by job id, claims by claim id, reports by
attempt token), and the server's ``{"error": {...}}`` answers mapped to the SDK's exceptions.
:class:`Transport` is the synchronous flavour, :class:`AsyncTransport` the asyncio one; both
behave like the TypeScript client's transport (src/client/transport.ts).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import httpx

from .errors import DynataskError, UnreachableError, ValidationError, error_from_response

__all__ = ["DEFAULT_URL", "AsyncTransport", "Transport", "resolve_token", "resolve_url"]

DEFAULT_URL = "http://127.0.0.1:7077"
"""The server's default address (``dynatask server`` without ``--host``/``--port``)."""

# Errors where the request may not have reached the server, or its answer was lost: the
# connection was refused or reset, a keep-alive connection closed under the request, a timeout.
_TRANSIENT: tuple[type[Exception], ...] = (
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.TimeoutException,
)

OnRetry = Callable[[Exception], None]


def resolve_url(url: str | None = None) -> str:
    """The server URL: ``url``, else ``$DYNATASK_URL``, else an http(s) ``$DYNATASK_DATABASE_URL``,
    else ``http://127.0.0.1:7077``."""
    if url is None:
        url = os.environ.get("DYNATASK_URL") or None
    if url is None:
        db = os.environ.get("DYNATASK_DATABASE_URL", "")
        if db.startswith(("http://", "https://")):
            url = db
    if url is None:
        url = DEFAULT_URL
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValidationError(f"url: {url} is not an http:// or https:// URL", field="url")
    return url


def resolve_token(token: str | None = None) -> str | None:
    """The bearer token: ``token``, else ``$DYNATASK_TOKEN``, else none."""
    if token is not None:
        return token or None
    return os.environ.get("DYNATASK_TOKEN") or None


def _encode(body: object) -> bytes:
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ValidationError(f"request body is not JSON-serialisable: {e}") from e


def _query(params: Mapping[str, object] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (params or {}).items():
        if v is None:
            continue
        if isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif isinstance(v, (list, tuple, set, frozenset)):
            out[k] = ",".join(str(x) for x in v)
        else:
            out[k] = str(v)
    return out


def _parse(method: str, path: str, res: httpx.Response) -> Any:
    text = res.text
    parsed: Any = None
    if text != "":
        try:
            parsed = json.loads(text)
        except ValueError:
            if res.status_code < 400:
                raise DynataskError(
                    f"{method} {path}: the answer is not JSON",
                    code="bad_response",
                    status=res.status_code,
                ) from None
    if res.status_code >= 400:
        raise error_from_response(res.status_code, parsed)
    return parsed


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter, 25 ms to 2 s, so a restarting server is not stormed."""
    return min(2.0, 0.025 * (1 << min(attempt, 16))) * (0.5 + random.random() / 2)


class _Base:
    url: str
    token: str | None
    retry_for: float
    timeout: float
    _closed: bool

    def _setup(self, url: str | None, token: str | None, retry_for: float, timeout: float) -> None:
        self.url = resolve_url(url).rstrip("/")
        self.token = resolve_token(token)
        self.retry_for = retry_for
        self.timeout = timeout
        self._closed = False

    @property
    def headers(self) -> dict[str, str]:
        h = {"accept": "application/json", "user-agent": "dynatask-python/0.1.0"}
        if self.token:
            h["authorization"] = f"Bearer {self.token}"
        return h

    def _timeout(self, timeout: float | None) -> httpx.Timeout:
        t = self.timeout if timeout is None else timeout
        return httpx.Timeout(t, connect=min(10.0, t))

    def _limits(self) -> httpx.Limits:
        # Room for a worker's concurrent calls (long poll, report, heartbeat, handlers' spawns
        # and waits) without a socket per request.
        return httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=30.0)

    def _again(self, e: Exception, retry: bool, deadline: float) -> bool:
        if not retry or self._closed or time.monotonic() >= deadline:
            return False
        if isinstance(e, _TRANSIENT):
            return True
        return isinstance(e, DynataskError) and e.status == 503

    def _unreachable(self, e: Exception) -> UnreachableError:
        what = str(e) or type(e).__name__
        return UnreachableError(
            f"cannot reach the dynatask server at {self.url}: {what}", code="unreachable", status=0
        )

    def _request_args(
        self, body: object, params: Mapping[str, object] | None
    ) -> tuple[bytes | None, dict[str, str], dict[str, str]]:
        content = None if body is None else _encode(body)
        headers = {"content-type": "application/json"} if content is not None else {}
        return content, headers, _query(params)


class Transport(_Base):
    """Synchronous JSON calls to a dynatask server, with retries (thread-safe)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        retry_for: float = 30.0,
        timeout: float = 70.0,
    ) -> None:
        self._setup(url, token, retry_for, timeout)
        self.http = httpx.Client(
            base_url=self.url,
            headers=self.headers,
            timeout=self._timeout(None),
            limits=self._limits(),
        )

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        params: Mapping[str, object] | None = None,
        retry: bool = True,
        timeout: float | None = None,
        retry_for: float | None = None,
        on_retry: OnRetry | None = None,
    ) -> Any:
        """One call: ``path`` like ``/v1/jobs``; returns the parsed JSON (``None`` when empty).

        Connection errors and 503 answers are retried with capped exponential backoff for
        ``retry_for`` seconds (the transport's by default); then a connection error raises
        :class:`UnreachableError`.
        """
        content, headers, query = self._request_args(body, params)
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        per_call = self._timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT
        attempt = 0
        while True:
            try:
                res = self.http.request(
                    method,
                    path,
                    content=content,
                    headers=headers,
                    params=query,
                    timeout=per_call,
                )
                return _parse(method, path, res)
            except (
                httpx.NetworkError,
                httpx.RemoteProtocolError,
                httpx.TimeoutException,
                DynataskError,
            ) as e:
                if not self._again(e, retry, deadline):
                    if isinstance(e, _TRANSIENT):
                        raise self._unreachable(e) from e
                    raise
                if on_retry is not None:
                    on_retry(e)
                time.sleep(min(_backoff(attempt), max(0.0, deadline - time.monotonic())))
                attempt += 1

    def close(self) -> None:
        """Closes the connection pool; calls in progress stop retrying."""
        self._closed = True
        self.http.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncTransport(_Base):
    """Asynchronous (asyncio) JSON calls to a dynatask server, with retries."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        retry_for: float = 30.0,
        timeout: float = 70.0,
    ) -> None:
        self._setup(url, token, retry_for, timeout)
        self.http = httpx.AsyncClient(
            base_url=self.url,
            headers=self.headers,
            timeout=self._timeout(None),
            limits=self._limits(),
        )

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        params: Mapping[str, object] | None = None,
        retry: bool = True,
        timeout: float | None = None,
        retry_for: float | None = None,
        on_retry: OnRetry | None = None,
    ) -> Any:
        """One call, as :meth:`Transport.call`."""
        content, headers, query = self._request_args(body, params)
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        per_call = self._timeout(timeout) if timeout is not None else httpx.USE_CLIENT_DEFAULT
        attempt = 0
        while True:
            try:
                res = await self.http.request(
                    method,
                    path,
                    content=content,
                    headers=headers,
                    params=query,
                    timeout=per_call,
                )
                return _parse(method, path, res)
            except (
                httpx.NetworkError,
                httpx.RemoteProtocolError,
                httpx.TimeoutException,
                DynataskError,
            ) as e:
                if not self._again(e, retry, deadline):
                    if isinstance(e, _TRANSIENT):
                        raise self._unreachable(e) from e
                    raise
                if on_retry is not None:
                    on_retry(e)
                await asyncio.sleep(min(_backoff(attempt), max(0.0, deadline - time.monotonic())))
                attempt += 1

    async def aclose(self) -> None:
        """Closes the connection pool; calls in progress stop retrying."""
        self._closed = True
        await self.http.aclose()

    async def __aenter__(self) -> AsyncTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
