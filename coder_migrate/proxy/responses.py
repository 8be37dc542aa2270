"""What the proxy says itself: complete responses, error pages, and where requests go.

:class:`Target` is an upstream the primary named (never an address taken from a request);
:class:`Answer` is a response the proxy composes. Reason phrases come from
:class:`http.HTTPStatus`. Error bodies are deliberately generic: which upstream, why and
where are for the debug log only.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final, Protocol

from coder_migrate.proxy.http1 import RequestHead
from coder_migrate.proxy.router import AppRoute

__all__ = [
    "Answer",
    "AppResolver",
    "LocalResponder",
    "Target",
    "error_page",
    "reason_phrase",
    "simple_response",
]


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


# Heads and pages of the statuses the proxy answers with, built once.
_REASONS: Final = {status.value: status.phrase.encode() for status in HTTPStatus}


def error_page(status: int) -> bytes:
    return f"{status} {reason_phrase(status)}\n".encode()


def simple_response(
    status: int,
    body: bytes = b"",
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: list[tuple[bytes, bytes]] | None = None,
    close: bool = False,
    head_only: bool = False,
) -> bytes:
    """A complete response with ``Content-Length``; ``close`` adds ``Connection: close``."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Status"))]
    if body or status >= 200:
        parts.append(b"Content-Type: " + content_type + b"\r\n")
    for name, value in headers or ():
        parts.append(name + b": " + value + b"\r\n")
    parts.append(b"Content-Length: %d\r\n" % len(body))
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes: an address the primary named, never one from the request."""

    host: str
    port: int
    tls: bool = False
    server_hostname: str = ""
    path_prefix: str = ""  # the app URL's own path, prepended to the upstream path
    set_cookie: bytes = b""  # a cookie to hand the browser with the response
    strip_credentials: bool = True  # remove Coder's session cookies before an app sees them
    websocket_path: str = ""  # for the terminal: the agent's pty endpoint path

    @property
    def key(self) -> tuple[str, int, bool]:
        return (self.host, self.port, self.tls)


@dataclass(frozen=True, slots=True)
class Answer:
    """A response the proxy composes itself (redirects, auth failures, copied answers)."""

    status: int
    body: bytes = b""
    content_type: bytes = b"text/html; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class AppResolver(Protocol):
    """Authorises workspace traffic and says where it goes (see :mod:`.auth`)."""

    def resolve_cached(self, head: RequestHead, app: AppRoute) -> Target | None:
        """The answer from caches alone, or ``None`` when the slow path is needed."""

    def resolve(self, head: RequestHead, app: AppRoute, scheme: str) -> Awaitable[Target | Answer]:
        """Verify tokens, ask the primary, and return a target or an answer for the client."""


class LocalResponder(Protocol):
    """Builds the proxy's own answers (health, build info, key, dashboard page)."""

    def answer(self, kind: str, head: RequestHead) -> Answer: ...

    def health_report(self) -> Awaitable[Answer]:
        """``/healthz-report``: checks the primary live, as Coder's proxy does."""
