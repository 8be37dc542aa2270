"""The one HTTP layer both Coder clients share: auth header, timeouts, retries, errors.

Retries: only idempotent calls (GET, HEAD, PUT, DELETE, OPTIONS) are retried, on transport
errors and 502/503/504, with bounded exponential backoff. A non-idempotent call is retried
only when the connection could not be opened at all (nothing reached the server).
Errors are decoded from the documented shapes, v1 ``{"error":{"msg","code","details"}}``
and v2 ``{"message","detail"}``, into :mod:`coder_migrate.errors`. Messages and log lines
carry the method and path (messages also the server's URL): never headers, tokens or the
query string.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from coder_migrate.errors import (
    CoderAPIError,
    CoderAuthError,
    CoderConflict,
    CoderNotFound,
    CoderUnavailable,
    CoderUnsupported,
    redact,
)
from coder_migrate.providers.tls import client_tls

__all__ = [
    "IDEMPOTENT_METHODS",
    "OPERATIONS_RETRY",
    "PREMIUM_MESSAGE",
    "RETRY_STATUSES",
    "CoderTransport",
    "ErrorStyle",
    "RetryPolicy",
    "decode_error",
    "parse_list",
    "parse_model",
    "path_of",
]

log = logging.getLogger("coder_migrate.providers.coder")

ErrorStyle = Literal["v1", "v2"]
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})
PREMIUM_MESSAGE = "Workspace Proxy is a Premium feature. Contact sales!"
_MAX_QUOTED = 200
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: ``attempts`` tries in total."""

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 4.0
    multiplier: float = 2.0

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        return float(min(self.max_delay, self.base_delay * self.multiplier ** (retry_number - 1)))


#: One try, no retry: for a caller that polls on its own (the poll is the retry), where the
#: client's backoff would only hold back seeing what came up meanwhile.
ASK_ONCE = RetryPolicy(attempts=1)

#: The toolkit's own operations (plan, apply, migrate, status): idempotent calls ride out a
#: primary that answers 5xx or does not answer for about 15 s (a restarting coderd pod, a load
#: balancer draining) before a wave stops. What sits in a user's path (the bundled proxy)
#: keeps the short default so a user is never held that long.
OPERATIONS_RETRY = RetryPolicy(attempts=8)


def _quote(text: str) -> str:
    """Server text, shortened and redacted, safe to put in an error message."""
    text = " ".join(text.split())
    if len(text) > _MAX_QUOTED:
        text = text[:_MAX_QUOTED] + "..."
    return redact(text)


def decode_error(
    response: httpx.Response, method: str, path: str, style: ErrorStyle, *, where: str = "",
    attempts: int = 1,
) -> CoderAPIError:
    """Turn an error response into the matching exception class.

    *where* names the server (``the primary at URL``); with it, a 5xx says who answered and
    how often it was tried, so a stop after retries is clear on its own.
    """
    status = response.status_code
    message = ""
    code = ""
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if style == "v1" and isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        message = str(error.get("msg") or "")
        code = str(error.get("code") or "")
        details = error.get("details")
        if details not in (None, "", {}, []):
            message = f"{message} ({json.dumps(details, sort_keys=True)})"
    elif isinstance(body, dict) and "message" in body:
        message = str(body.get("message") or "")
        detail = str(body.get("detail") or "")
        if detail:
            message = f"{message} ({detail})"
    elif response.content:
        content_type = response.headers.get("content-type", "")
        message = "non-JSON error body" if "html" in content_type else response.text
    message = _quote(message or response.reason_phrase or "error")
    error_class: type[CoderAPIError] = CoderAPIError
    if status == 403 and PREMIUM_MESSAGE in message:
        error_class = CoderUnsupported
        message = f"{message} (the primary has no licence with the workspace_proxy feature)"
    elif status in (401, 403):
        error_class = CoderAuthError
    elif status == 404:
        error_class = CoderNotFound
    elif status == 409:
        error_class = CoderConflict
    elif status >= 500:
        error_class = CoderUnavailable
        if where:
            tries = f"on all {attempts} attempts" if attempts > 1 else "(not retried)"
            message = f"{where} answered {status} {tries}: {message}"
    return error_class(message, method=method, path=path, status=status, code=code)


class CoderTransport:
    """An ``httpx.AsyncClient`` with the project's auth, timeout, retry and error rules."""

    def __init__(
        self,
        base_url: str,
        *,
        auth_headers: Mapping[str, str],
        error_style: ErrorStyle,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.error_style: ErrorStyle = error_style
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._auth_headers = dict(auth_headers)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            headers={"Accept": "application/json"},
            verify=client_tls(),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        url: str | None = None,
        authenticate: bool = True,
        idempotent: bool | None = None,
        expected: tuple[int, ...] = (),
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send with retries; return the response or raise a decoded error.

        ``url`` overrides ``base_url + path`` (``path`` still names the call in errors).
        A status in ``expected`` is returned even when it is >299. ``retry`` overrides the
        client's policy for this call (a caller that polls on its own asks once).
        """
        method = method.upper()
        retryable = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        send_headers = {**(self._auth_headers if authenticate else {}), **(headers or {})}
        target = url or self.url(path)
        policy = retry or self.retry
        attempts = max(1, policy.attempts)
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                response = await self._client.request(
                    method,
                    target,
                    json=json_body,
                    params=dict(params) if params else None,
                    headers=send_headers,
                )
            except httpx.HTTPError as error:
                may_retry = retryable or isinstance(error, httpx.ConnectError)
                reason = type(error).__name__
                if may_retry and attempt < attempts:
                    await self._backoff(method, path, reason, attempt, attempts, policy)
                    continue
                raise CoderUnavailable(
                    f"could not reach {self._where(target)} ({reason}) after {attempt} "
                    "attempt(s)",
                    method=method,
                    path=path,
                ) from error
            elapsed = time.monotonic() - started
            log.debug("%s %s -> %s in %.3fs", method, path, response.status_code, elapsed)
            if response.status_code in RETRY_STATUSES and retryable and attempt < attempts:
                await self._backoff(method, path, str(response.status_code), attempt, attempts,
                                    policy)
                continue
            if response.status_code > 299 and response.status_code not in expected:
                raise decode_error(response, method, path, self.error_style,
                                   where=self._where(target), attempts=attempt)
            return response
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises

    def _where(self, target: str) -> str:
        """Who was asked: the primary (the base URL), or the host of an overriding URL."""
        if target.startswith(self.base_url):
            return f"the primary at {self.base_url}"
        parts = urlsplit(target)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")

    async def _backoff(
        self, method: str, path: str, reason: str, attempt: int, attempts: int,
        policy: RetryPolicy,
    ) -> None:
        delay = policy.delay(attempt)
        log.warning(
            "%s %s failed (%s); retry %d/%d in %.2fs",
            method,
            path,
            reason,
            attempt,
            attempts - 1,
            delay,
        )
        await asyncio.sleep(delay)

    async def json(
        self,
        method: str,
        path: str,
        **kwargs: Any,
    ) -> Any:
        """``request`` and decode the JSON body; a non-JSON body is a ``CoderAPIError``."""
        response = await self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CoderAPIError(
                "the primary answered with a body that is not JSON",
                method=method.upper(),
                path=path,
                status=response.status_code,
            ) from error


def path_of(url: str) -> str:
    """The path of a URL, for error messages (no query string, no credentials)."""
    return urlsplit(url).path or "/"


def parse_model(model: type[ModelT], data: Any, method: str, path: str) -> ModelT:
    """Validate a response body; a shape mismatch is a ``CoderAPIError`` naming the call."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "(body)" for e in error.errors())
        raise CoderAPIError(
            f"unexpected response shape (fields: {fields})", method=method, path=path
        ) from error


def parse_list(model: type[ModelT], data: Any, method: str, path: str) -> list[ModelT]:
    """Validate a JSON array of ``model``."""
    if not isinstance(data, list):
        raise CoderAPIError("unexpected response shape (expected a list)", method=method, path=path)
    return [parse_model(model, item, method, path) for item in data]


class TransportClient:
    """What every Coder API client shares: its transport, async-with and close."""

    _http: CoderTransport

    @property
    def base_url(self) -> str:
        return self._http.base_url

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
