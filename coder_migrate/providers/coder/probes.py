"""Plain HTTP probes of Coder endpoints: is a URL answering, and how.

A satellite's ``/healthz``, an app reached through a satellite, a URL that should be a Coder
primary: one GET each, no retries, a short timeout. Transport errors become the reason
string (the exception's class name), never an exception, so callers decide what a failed
probe means.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from coder_migrate.errors import CoderAPIError, redact
from coder_migrate.providers.coder.transport import RetryPolicy
from coder_migrate.providers.coder.v1 import CoderV1Client
from coder_migrate.providers.tls import client_tls

__all__ = ["PROBE_TIMEOUT", "Probe", "probe", "probe_primary", "probe_url", "same_origin"]

PROBE_TIMEOUT = 5.0


class Probe:
    """The answer of one GET: whether it came, its status and headers."""

    def __init__(
        self, *, answered: bool, status: int = 0, headers: Mapping[str, str] | None = None,
        reason: str = "",
    ) -> None:
        self.answered = answered
        self.status = status
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.reason = reason or (f"HTTP {status}" if answered else "no answer")

    @property
    def ok(self) -> bool:
        return self.answered and 200 <= self.status < 300


async def probe(
    url: str, *, headers: Mapping[str, str] | None = None, timeout: float = PROBE_TIMEOUT
) -> Probe:
    """GET *url* once. ``ValueError`` for a URL that cannot be requested at all."""
    try:
        async with httpx.AsyncClient(timeout=timeout, verify=client_tls()) as client:
            response = await client.get(url, headers=dict(headers or {}))
    except httpx.InvalidURL as error:
        raise ValueError(str(error)) from None
    except httpx.HTTPError as error:
        return Probe(answered=False, reason=type(error).__name__)
    return Probe(answered=True, status=response.status_code, headers=response.headers)


async def probe_url(
    url: str, *, headers: Mapping[str, str] | None = None, timeout: float = PROBE_TIMEOUT
) -> tuple[bool, str]:
    """GET *url*; (answered 2xx, short reason)."""
    try:
        answer = await probe(url, headers=headers, timeout=timeout)
    except ValueError as error:
        return False, f"not a usable URL ({error})"
    return answer.ok, answer.reason


def same_origin(first: str, second: str) -> bool:
    """Both URLs have the same scheme, host and port."""
    a, b = httpx.URL(first), httpx.URL(second)
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


async def probe_primary(url: str, token: str | None, *, timeout: float = PROBE_TIMEOUT) -> str:
    """Why *url* does not answer as a Coder primary, or "" when it does.

    The version call of the v1 client (``GET /api``, whose ``coder-version`` header names a
    Coder primary), one try. *token* is ``None`` for a URL on another origin than the
    inventory's primary: the session token is never sent anywhere but the primary it
    belongs to, and without it a ``401`` (the route is authenticated) still proves a server
    answers there.
    """
    if token is None:
        return await _probe_without_token(url, timeout)
    try:
        async with CoderV1Client(url, token, timeout=timeout,
                                 retry=RetryPolicy(attempts=1)) as coder:
            version = await coder.version(refresh=True)
    except CoderAPIError as error:
        return redact(str(error))
    except httpx.InvalidURL as error:
        return f"not a usable URL ({error})"
    if version.major is None:
        return "GET /api answered without a coder-version header: not a Coder primary"
    return ""


async def _probe_without_token(url: str, timeout: float) -> str:
    try:
        answer = await probe(url.rstrip("/") + "/api", timeout=timeout)
    except ValueError as error:
        return f"not a usable URL ({error})"
    if not answer.answered:
        return f"could not reach {url} ({answer.reason})"
    if "coder-version" in answer.headers or answer.status == 401:
        return ""
    return (f"GET /api answered {answer.status} without a coder-version header: "
            "not a Coder primary")
