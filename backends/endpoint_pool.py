"""Calls to a set of HTTP servers that serve the same model: load spread, limits, retries.

This is how a recipe scales out to many servers: every request goes to the
endpoint with the fewest requests in flight (ties to the one used least), each
endpoint takes at most `max_concurrency` requests at once, and a request that
meets a transient failure — 429, a 5xx, a timeout, a refused or dropped
connection, a truncated body — is retried with exponential backoff and jitter,
honouring the server's Retry-After, on whichever endpoint is best then. An
endpoint that refused a connection is avoided until its backoff has passed, so
when one server dies mid-run the others take its load. Other 4xx answers are
the caller's mistake and are raised at once, never retried.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class RemoteError(Exception):
    """A server refused a request in a way that retrying cannot fix (a 4xx other than 429)."""

    def __init__(self, status: int, message: str, url: str, code: str | None = None):
        self.status, self.message, self.url, self.code = status, message, url, code
        super().__init__(f"{url} answered HTTP {status}: {message}")


class ServerUnavailable(Exception):
    """Every try of a request met a transient failure; the last one is in the message."""


@dataclass
class Attempt:
    """What one try of a request gave: the answer, or why it failed and how to wait."""

    data: dict[str, Any] | None = None
    #: Why the try failed, for the message when every try has.
    failure: str = ""
    retry_after: float | None = None
    #: The endpoint refused or dropped the connection: rest it, and try another at once if one is up.
    refused: bool = False


@dataclass
class EndpointStats:
    """What one endpoint has seen; read by tests and benchmarks."""

    url: str
    in_flight: int = 0
    sent: int = 0
    ok: int = 0
    failures: int = 0
    most_in_flight: int = 0
    down_until: float = 0.0


def _error_message(response: httpx.Response) -> str:
    """The server's own words: OpenAI's {"error": {"message"}}, FastAPI's {"detail"}, or text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if "detail" in body:
            return json.dumps(body["detail"])[:500]
    return json.dumps(body)[:500]


def _error_code(response: httpx.Response) -> str | None:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code) if code is not None else None


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class EndpointPool:
    """POST JSON to the best endpoint of a pool, with the retry rules in the module docstring.

    The HTTP exchange of one try is `_try`; a pool that reaches its servers another
    way (`LiteLLMPool`, through LiteLLM's providers) replaces it and `_connect`,
    keeping the load spread, concurrency limits, retries and busy time.
    """

    def __init__(
        self,
        urls: tuple[str, ...],
        *,
        api_key: str | None = None,
        max_concurrency: int = 16,
        timeout: float = 300.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ):
        self.endpoints = [EndpointStats(url) for url in urls]
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._active = 0
        self._busy_since = 0.0
        #: Wall seconds during which at least one request was in flight (the engine's "model time").
        self.busy_seconds = 0.0

    def _bind(self) -> None:
        """A client and gates for the running event loop (each `orchestra.run` has its own)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._client = self._connect()
            self._gates = {e.url: asyncio.Semaphore(self.max_concurrency) for e in self.endpoints}

    def _connect(self) -> httpx.AsyncClient | None:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            headers=self._headers,
            limits=httpx.Limits(
                max_connections=self.max_concurrency * len(self.endpoints),
                max_keepalive_connections=self.max_concurrency * len(self.endpoints),
            ),
        )

    def _pick(self) -> EndpointStats:
        now = time.monotonic()
        up = [e for e in self.endpoints if e.down_until <= now]
        if not up:  # all resting: the one back soonest
            return min(self.endpoints, key=lambda e: e.down_until)
        return min(up, key=lambda e: (e.in_flight, e.sent))

    def _another_up(self, failed: EndpointStats) -> bool:
        """Whether a dead endpoint's request can go elsewhere at once instead of waiting."""
        now = time.monotonic()
        return any(e is not failed and e.down_until <= now for e in self.endpoints)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return ceiling * random.uniform(0.5, 1.0)

    async def post(self, path: str, body: dict[str, Any], *, expect: str | None = None) -> dict[str, Any]:
        """The JSON object a server answered; `expect` names a key a good answer has (a 200
        without it counts as a transient failure, like a truncated body)."""
        self._bind()
        last = "no try made"
        for attempt in range(self.retries + 1):
            endpoint = self._pick()
            endpoint.in_flight += 1
            endpoint.most_in_flight = max(endpoint.most_in_flight, endpoint.in_flight)
            self._enter()
            try:
                async with self._gates[endpoint.url]:
                    endpoint.sent += 1
                    outcome = await self._try(endpoint.url, path, body, expect)
                    if outcome.data is not None:
                        endpoint.ok += 1
                        return outcome.data
                    if outcome.refused:
                        endpoint.down_until = time.monotonic() + self._delay(attempt, None)
            finally:
                endpoint.in_flight -= 1
                self._leave()
            last = outcome.failure
            endpoint.failures += 1
            if attempt < self.retries and not (outcome.refused and self._another_up(endpoint)):
                await asyncio.sleep(self._delay(attempt, outcome.retry_after))
        raise ServerUnavailable(f"gave up after {self.retries + 1} tries; last: {last}")

    async def _try(self, url: str, path: str, body: dict[str, Any], expect: str | None) -> Attempt:
        """One POST: the answer, a transient failure (retried), or a RemoteError (raised)."""
        assert self._client is not None
        try:
            response = await self._client.post(url + path, json=body)
        except httpx.TimeoutException:
            return Attempt(failure=f"{url}{path}: no answer within {self.timeout:g} s")
        except httpx.TransportError as err:  # refused, reset, or a body cut short
            return Attempt(failure=f"{url}{path}: {type(err).__name__}: {err or 'connection failed'}", refused=True)
        status = response.status_code
        if status == 200:
            data = _json_object(response)
            if data is not None and (expect is None or isinstance(data.get(expect), list)):
                return Attempt(data=data)
            return Attempt(failure=f"{url}{path}: a malformed or truncated answer: {response.text[:200]!r}")
        if status == 429 or status >= 500:
            return Attempt(
                failure=f"{url}{path}: HTTP {status}: {_error_message(response)}",
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
            )
        raise RemoteError(status, _error_message(response), url + path, _error_code(response))

    def _enter(self) -> None:
        if self._active == 0:
            self._busy_since = time.monotonic()
        self._active += 1

    def _leave(self) -> None:
        self._active -= 1
        if self._active == 0:
            self.busy_seconds += time.monotonic() - self._busy_since

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client, self._loop = None, None


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
