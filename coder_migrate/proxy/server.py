"""The data path: the thin asyncio shell around the pure parser and router.

One :class:`ClientConnection` per accepted socket parses requests (:mod:`.http1`), asks
:func:`.router.route` what to do, answers locally or relays to an upstream taken from a
keep-alive pool, and streams both bodies with backpressure (a transport that reports
``pause_writing`` stops reading on the other side). Upgraded connections become raw byte
relays (:mod:`.relay`), except TCP over websocket, whose websocket the proxy ends itself
(:mod:`.tunnel`). Timeouts are checked by one sweep a second rather than a timer per
request. Nothing here logs per request at info level, and metrics are plain integers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from websockets.http11 import Response

from coder_migrate.proxy.config import Limits
from coder_migrate.proxy.http1 import (
    HOP_BY_HOP,
    HttpReject,
    RequestHead,
    RequestParser,
    parse_response_head,
)
from coder_migrate.proxy.metrics import ProxyStats
from coder_migrate.proxy.relay import SpliceRelay, splice_supported
from coder_migrate.proxy.router import (
    AppRoute,
    Decision,
    Forward,
    Local,
    Reject,
    RouteTable,
    route,
    terminal_query,
)
from coder_migrate.proxy.tunnel import WebSocketTunnel, handshake

__all__ = [
    "Answer",
    "AppResolver",
    "ChunkScanner",
    "ClientConnection",
    "LocalResponder",
    "ProxyServer",
    "Target",
    "simple_response",
]

log = logging.getLogger("coder_migrate.proxy")

_REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}
_FORWARDED = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}
)
_REQUEST_DROPPED = HOP_BY_HOP | _FORWARDED
# Lengths of every request header name the proxy drops or edits; others pass untouched.
_REQUEST_SPECIAL_LENGTHS = frozenset(
    len(n)
    for n in (*_REQUEST_DROPPED, b"host", b"cookie", b"coder-session-token", b"session-token")
)
# Session headers of Coder v2 and v1: an app must never see them.
_SESSION_HEADERS = frozenset({b"coder-session-token", b"session-token"})
_UPSTREAM_HEAD_LIMIT = 64 * 1024

_BODY_BUFFER_LIMIT = 1 << 20
_POOL_IDLE_PER_TARGET = 256
_INF = float("inf")
# Reasons a client connection stops reading (bit flags).
_PAUSE_BACKPRESSURE = 1
_PAUSE_WAITING = 2
_PAUSE_QUEUE = 4
_PAUSE_UPGRADE = 8
# What a response head did to the exchange.
_HEAD_OK = 0
_HEAD_INTERIM = 1
_HEAD_FAILED = 2


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
    reason = _REASONS.get(status, "Status").encode()
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
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


def _error_page(status: int) -> bytes:
    # Deliberately generic: which upstream, why and where are for the logs only.
    reason = _REASONS.get(status, "Error")
    return f"{status} {reason}\n".encode()


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


class ChunkScanner:
    """Finds the end of a chunked body in raw bytes without copying them."""

    __slots__ = ("_line", "_remaining", "_state")

    # states: 0 size line, 1 data, 2 CRLF after data, 3 trailer lines, 4 done
    def __init__(self) -> None:
        self._state = 0
        self._remaining = 0
        self._line = b""

    def feed(self, data: bytes, start: int = 0) -> int:
        """Scan ``data[start:]``; return the index just after the body's end, or -1."""
        position = start
        size = len(data)
        while position < size:
            state = self._state
            if state == 1:
                step = min(self._remaining, size - position)
                position += step
                self._remaining -= step
                if self._remaining == 0:
                    self._state = 2
                    self._line = b""
                continue
            end = data.find(b"\n", position)
            if end < 0:
                self._line += data[position:]
                if len(self._line) > 4096:
                    raise ValueError("chunk line too long")
                return -1
            line = (self._line + data[position:end]).rstrip(b"\r")
            self._line = b""
            position = end + 1
            if state == 0:
                size_text = line.split(b";", 1)[0].strip()
                try:
                    chunk = int(size_text, 16)
                except ValueError:
                    raise ValueError("invalid chunk size") from None
                if chunk < 0 or len(size_text) > 16:
                    raise ValueError("invalid chunk size")
                if chunk == 0:
                    self._state = 3
                else:
                    self._remaining = chunk
                    self._state = 1
            elif state == 2:
                if line:
                    raise ValueError("missing CRLF after chunk")
                self._state = 0
            elif state == 3 and not line:
                self._state = 4
                return position
        return -1


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an app, an agent or the primary."""

    __slots__ = (
        "body_remaining",
        "bytes_after_head",
        "chunks",
        "client",
        "head_buffer",
        "key",
        "pool",
        "received_any",
        "relaying",
        "reusable",
        "transport",
    )

    def __init__(self, pool: UpstreamPool, key: tuple[str, int, bool]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.client: ClientConnection | None = None
        self.head_buffer = b""
        self.bytes_after_head = False  # the read that ended the head carried more bytes
        self.body_remaining = -1  # -1: reading the head; -2: until close; -3: chunked
        self.chunks: ChunkScanner | None = None
        self.reusable = True
        self.relaying = False
        self.received_any = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        client = self.client
        self.client = None
        if client is not None:
            client.upstream_lost(self)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # Bytes nobody asked for: the connection cannot be trusted with a next request.
            self.reusable = False
            if self.transport is not None:
                self.transport.close()
            return
        self.received_any = True
        if self.relaying:
            client.pool_stats.bytes_to_client += len(data)
            client.send_raw(data)
            return
        offset = 0
        if self.body_remaining == -1:
            if self.head_buffer:
                data = self.head_buffer + data
                self.head_buffer = b""
            while True:
                end = data.find(b"\r\n\r\n", offset)
                if end < 0:
                    if len(data) - offset > _UPSTREAM_HEAD_LIMIT:
                        self.reusable = False
                        client.upstream_failed(self, 502, "invalid")
                        return
                    self.head_buffer = data[offset:]
                    return
                self.bytes_after_head = end + 4 < len(data)
                outcome = client.upstream_head(self, data[offset : end + 4])
                offset = end + 4
                if outcome == _HEAD_INTERIM:
                    continue
                if outcome == _HEAD_FAILED:
                    return
                break
            if offset == len(data):
                if self.body_remaining == 0 and not self.relaying:
                    client.upstream_done(self)
                return
            if self.relaying:
                rest = memoryview(data)[offset:]
                client.pool_stats.bytes_to_client += len(rest)
                client.send_raw(rest)
                return
        self._body(client, data, offset)

    def _body(self, client: ClientConnection, data: bytes, offset: int) -> None:
        """Relay response body bytes ``data[offset:]`` unchanged, up to the body's end."""
        remaining = self.body_remaining
        size = len(data) - offset
        if remaining >= 0:
            if size > remaining:
                self.reusable = False  # more than announced: framing is broken
                size = remaining
            self.body_remaining = remaining - size
            client.pool_stats.bytes_to_client += size
            if offset or size != len(data):
                client.send_body(memoryview(data)[offset : offset + size])
            else:
                client.send_body(data)
            if self.body_remaining == 0:
                client.upstream_done(self)
            return
        if remaining == -3:
            assert self.chunks is not None
            try:
                end = self.chunks.feed(data, offset)
            except ValueError:
                self.reusable = False
                client.upstream_failed(self, 502, "invalid")
                return
            stop = end if end >= 0 else len(data)
            if 0 <= end < len(data):
                self.reusable = False  # bytes after the last chunk: do not reuse
            client.pool_stats.bytes_to_client += stop - offset
            client.send_body(
                data if offset == 0 and stop == len(data) else memoryview(data)[offset:stop]
            )
            if end >= 0:
                client.upstream_done(self)
            return
        # Until the upstream closes.
        client.pool_stats.bytes_to_client += size
        client.send_body(memoryview(data)[offset:] if offset else data)

    def eof_received(self) -> bool | None:
        client = self.client
        if self.relaying and client is not None:
            client.relay_eof(client.transport)
            return True
        return None

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause(_PAUSE_BACKPRESSURE)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume(_PAUSE_BACKPRESSURE)

    def reset_for_response(self) -> None:
        self.head_buffer = b""
        self.body_remaining = -1
        self.chunks = None
        self.received_any = False


class UpstreamPool:
    """LIFO pools of idle keep-alive connections, one per (host, port, tls)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: Limits, stats: ProxyStats) -> None:
        self.loop = loop
        self.limits = limits
        self.stats = stats
        self.idle: dict[tuple[str, int, bool], list[UpstreamConnection]] = {}
        self.ssl_context = ssl.create_default_context()

    def take(self, key: tuple[str, int, bool]) -> UpstreamConnection | None:
        idle = self.idle.get(key)
        while idle:
            connection = idle.pop()
            transport = connection.transport
            if connection.reusable and transport is not None and not transport.is_closing():
                return connection
        return None

    def give_back(self, connection: UpstreamConnection) -> None:
        transport = connection.transport
        if not connection.reusable or transport is None or transport.is_closing():
            if transport is not None:
                transport.close()
            return
        connection.client = None
        connection.reset_for_response()
        idle = self.idle.setdefault(connection.key, [])
        if len(idle) >= _POOL_IDLE_PER_TARGET:
            transport.close()
            return
        idle.append(connection)

    async def connect(self, target: Target) -> UpstreamConnection:
        """A new connection; raises ``TimeoutError`` or ``OSError``."""
        key = target.key
        ssl_context = self.ssl_context if target.tls else None
        _, protocol = await asyncio.wait_for(
            self.loop.create_connection(
                lambda: UpstreamConnection(self, key),
                target.host,
                target.port,
                ssl=ssl_context,
                server_hostname=(target.server_hostname or target.host) if target.tls else None,
            ),
            timeout=self.limits.upstream_connect_timeout,
        )
        return protocol

    def close_all(self) -> None:
        for idle in self.idle.values():
            for connection in idle:
                if connection.transport is not None:
                    connection.transport.close()
        self.idle.clear()


class ClientConnection(asyncio.Protocol):
    """One client socket: parse, route, answer or relay; one request at a time."""

    def __init__(self, server: ProxyServer, scheme: str) -> None:
        self.server = server
        self.scheme = scheme
        self.pool_stats = server.stats
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.forwarded = b""
        self.parser = RequestParser(self, **server.parser_limits)
        self.deadline = _INF
        self.paused = 0
        self.closing = False
        self.counted = False
        # The current exchange.
        self.head: RequestHead | None = None
        self.metric_path = ""
        self.started = 0.0
        self.status = 0
        self.upstream: UpstreamConnection | None = None
        self.target: Target | None = None
        self.body_buffer: list[bytes] | None = None
        self.body_buffered = 0
        self.request_done = False
        self.response_started = False
        self.keep_alive = True
        self.discard_body = False
        self.chunked_out = False
        self.upgrade_leftover = b""
        self.retried = False
        self.reused_upstream = False
        self.relay: SpliceRelay | None = None
        self.tunnel: WebSocketTunnel | None = None
        self.relay_started = 0.0
        self.relay_eofs = 0
        self.queue: list[tuple[RequestHead, list[bytes], bool]] = []
        self.task: asyncio.Task[None] | None = None
        self.held_head = b""

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self.forwarded = b"\r\nX-Forwarded-For: %s\r\nX-Forwarded-Proto: %s" % (
            self.peer.encode(),
            self.scheme.encode(),
        )
        count = server.per_client.get(self.peer, 0)
        if count >= server.limits.max_connections_per_client or server.draining:
            self.transport.write(simple_response(503, _error_page(503), close=True))
            self.transport.close()
            self.closing = True
            return
        server.per_client[self.peer] = count + 1
        self.counted = True
        server.connections.add(self)
        self.pool_stats.connections += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.deadline = server.now + server.limits.idle_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        if self.relay is not None and not self.relay.closed:
            return  # the sockets live on in the splice relay; it ends the exchange
        self._forget()

    def _forget(self) -> None:
        self.closing = True
        server = self.server
        if self.counted:
            self.counted = False
            server.connections.discard(self)
            self.pool_stats.connections -= 1
            remaining = server.per_client.get(self.peer, 1) - 1
            if remaining:
                server.per_client[self.peer] = remaining
            else:
                server.per_client.pop(self.peer, None)
        if self.task is not None:
            self.task.cancel()
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.client = None
            if upstream.transport is not None:
                upstream.transport.close()
        if self.head is not None:
            if self.relay_started:
                self._relay_finished()
            else:
                self._finish_metrics(self.status or 499)

    def data_received(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.relaying:
            self.pool_stats.bytes_to_upstream += len(data)
            if upstream.transport is not None:
                upstream.transport.write(data)
            return
        if self.head is None and not self.parser.in_head:
            self.deadline = self.server.now + self.server.limits.header_timeout
        elif self.head is not None:
            self.deadline = self.server.now + self.server.limits.idle_timeout
        try:
            leftover = self.parser.feed(data)
        except HttpReject as reject:
            self._reject_and_close(reject.status, reject.reason)
            return
        if leftover is not None:
            self.upgrade_leftover += leftover
            # The parser stops at an upgrade: nothing more is parsed on this connection.
            self.pause(_PAUSE_UPGRADE)

    def eof_received(self) -> bool | None:
        upstream = self.upstream
        if upstream is not None and upstream.relaying:
            self.relay_eof(upstream.transport)
            return True
        return None

    def pause_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.resume_reading()

    # -- flow control ------------------------------------------------------------------

    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # -- parser sink -------------------------------------------------------------------

    def on_request_head(self, head: RequestHead) -> None:
        if self.head is not None:
            # Pipelined: keep it (and its body) until the current exchange ends.
            self.queue.append((head, [], False))
            self.pause(_PAUSE_QUEUE)
            return
        self._start(head)

    def on_request_body(self, chunk: bytes) -> None:
        if self.queue:
            queued = self.queue[-1]
            queued[1].append(chunk)
            if sum(len(c) for c in queued[1]) > _BODY_BUFFER_LIMIT:
                raise HttpReject(413, "pipelined body too large")
            return
        self._body(chunk)

    def _body(self, chunk: bytes) -> None:
        if self.discard_body or self.head is None:
            return
        upstream = self.upstream
        self.pool_stats.bytes_to_upstream += len(chunk)
        if self.body_buffer is not None or upstream is None or upstream.transport is None:
            if self.body_buffer is None:
                self.body_buffer = []
            self.body_buffer.append(chunk)
            self.body_buffered += len(chunk)
            if self.body_buffered > _BODY_BUFFER_LIMIT:
                self.pause(_PAUSE_WAITING)
            return
        if self.chunked_out:
            upstream.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        else:
            upstream.transport.write(chunk)

    def on_request_end(self) -> None:
        if self.queue:
            head, chunks, _ = self.queue[-1]
            self.queue[-1] = (head, chunks, True)
            return
        self._end()

    def _end(self) -> None:
        if self.head is None:
            return  # answered already (a local answer, or an error)
        self.request_done = True
        if self.discard_body:
            return
        upstream = self.upstream
        if self.chunked_out:
            if self.body_buffer is not None or upstream is None or upstream.transport is None:
                if self.body_buffer is None:
                    self.body_buffer = []
                self.body_buffer.append(b"")  # marks the end of a chunked body
            else:
                upstream.transport.write(b"0\r\n\r\n")

    # -- exchanges ---------------------------------------------------------------------

    def _start(self, head: RequestHead) -> None:
        server = self.server
        self.head = head
        self.started = time.perf_counter()
        self.status = 0
        self.request_done = False
        self.response_started = False
        self.discard_body = False
        self.body_buffer = None
        self.body_buffered = 0
        self.retried = False
        self.keep_alive = head.keep_alive and not server.draining
        self.pool_stats.concurrent_requests += 1
        self.deadline = server.now + server.limits.upstream_response_timeout
        decision: Decision = route(head, server.table)
        self.metric_path = decision.metric_path
        if type(decision) is Forward:
            primary = server.primary
            if primary is None:
                self._answer_error(502)
                return
            self._proxy(primary, head.target)
        elif type(decision) is AppRoute:
            resolver = server.resolver
            if resolver is None:
                self._answer_error(404)
                return
            target = resolver.resolve_cached(head, decision)
            if target is not None:
                self._to_app(head, decision, target)
            else:
                self.pause(_PAUSE_WAITING)
                self.task = server.loop.create_task(
                    self._resolve(resolver, head, decision), name="proxy-resolve-app"
                )
        elif type(decision) is Local:
            if decision.kind == "healthz-report":
                self.pause(_PAUSE_WAITING)
                self.task = server.loop.create_task(self._report(head), name="proxy-health-report")
                return
            answer = server.local.answer(decision.kind, head)
            self._answer(answer.status, answer.body, answer.content_type, answer.headers)
        else:
            assert type(decision) is Reject
            if decision.location:
                self._answer(
                    decision.status, b"", b"text/plain", [(b"Location", decision.location.encode())]
                )
            else:
                self._answer_error(decision.status)

    async def _resolve(self, resolver: AppResolver, head: RequestHead, app: AppRoute) -> None:
        try:
            result = await resolver.resolve(head, app, self.scheme)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("authorising an app request failed")
            result = Answer(502, _error_page(502), b"text/plain")
        finally:
            self.task = None
        if self.closing or self.head is not head:
            return
        self.resume(_PAUSE_WAITING)
        if isinstance(result, Answer):
            self._answer(result.status, result.body, result.content_type, result.headers)
            return
        self._to_app(head, app, result)

    def _to_app(self, head: RequestHead, app: AppRoute, target: Target) -> None:
        if app.access_method == "tcp":
            self._open_tunnel(head, target)
        else:
            self._proxy(target, _app_path(head, app, target))

    async def _report(self, head: RequestHead) -> None:
        try:
            answer = await self.server.local.health_report()
        finally:
            self.task = None
        if self.closing or self.head is not head:
            return
        self.resume(_PAUSE_WAITING)
        self._answer(answer.status, answer.body, answer.content_type, answer.headers)

    def _answer_error(self, status: int) -> None:
        self._answer(status, _error_page(status), b"text/plain; charset=utf-8", None)

    def _answer(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        headers: list[tuple[bytes, bytes]] | None,
    ) -> None:
        head = self.head
        assert head is not None
        if head.has_body and not self.request_done:
            # Not worth reading a body nobody wants; the connection ends after the answer.
            self.discard_body = True
            self.keep_alive = False
        if head.upgrade:
            self.keep_alive = False
        self.status = status
        self.response_started = True
        if self.transport is not None:
            self.transport.write(
                simple_response(
                    status,
                    body,
                    content_type=content_type,
                    headers=headers,
                    close=not self.keep_alive,
                    head_only=head.method == "HEAD",
                )
            )
        self._exchange_done()

    def _proxy(self, target: Target, path: str | bytes) -> None:
        head = self.head
        assert head is not None
        self.target = target
        server = self.server
        if type(path) is str:
            if target.path_prefix and target.path_prefix != "/":
                path = target.path_prefix.rstrip("/") + path
            path = path.encode("latin-1")
        request_head = self._upstream_head(head, target, path)  # type: ignore[arg-type]
        upstream = server.pool.take(target.key)
        if upstream is not None:
            self.reused_upstream = True
            self._send_head(upstream, request_head)
            return
        self.reused_upstream = False
        self.pause(_PAUSE_WAITING)
        self.task = server.loop.create_task(
            self._connect(target, request_head), name="proxy-upstream-connect"
        )

    async def _connect(self, target: Target, request_head: bytes) -> None:
        try:
            upstream = await self.server.pool.connect(target)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self.task = None
            self.pool_stats.upstream_error("timeout")
            self._fail(504)
            return
        except (OSError, ssl.SSLError) as error:
            self.task = None
            self.pool_stats.upstream_error("refused")
            log.debug("upstream %s:%s unreachable: %s", target.host, target.port, error)
            self._fail(502)
            return
        self.task = None
        if self.closing:
            self.server.pool.give_back(upstream)
            return
        self.resume(_PAUSE_WAITING)
        self._send_head(upstream, request_head)

    def _fail(self, status: int) -> None:
        if self.head is None or self.closing:
            return
        self.resume(_PAUSE_WAITING)
        if self.response_started:
            self._close()
            return
        self.keep_alive = False
        self._answer_error(status)

    def _send_head(self, upstream: UpstreamConnection, request_head: bytes) -> None:
        self.upstream = upstream
        upstream.client = self
        transport = upstream.transport
        assert transport is not None
        buffered = self.body_buffer
        self.body_buffer = None
        if not buffered and not self.upgrade_leftover:
            transport.write(request_head)
        else:
            parts = [request_head]
            for chunk in buffered or ():
                if self.chunked_out:
                    parts.append(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunk else b"0\r\n\r\n")
                else:
                    parts.append(chunk)
            if self.upgrade_leftover:
                parts.append(self.upgrade_leftover)
                self.pool_stats.bytes_to_upstream += len(self.upgrade_leftover)
                self.upgrade_leftover = b""
            transport.writelines(parts)
        self.body_buffered = 0

    def _upstream_head(self, head: RequestHead, target: Target, path: bytes) -> bytes:
        connection_tokens: frozenset[bytes] = frozenset()
        if head.connection is not None:
            connection_tokens = frozenset(
                t.strip().lower() for t in head.connection.split(b",") if t.strip()
            )
        parts = [head.method.encode(), b" ", path, b" HTTP/1.1\r\n"]
        append = parts.append
        strip = target.strip_credentials
        upgrade_value = b""
        host_value = b""
        for name, value in head.headers:
            if len(name) in _REQUEST_SPECIAL_LENGTHS:
                lowered = name.lower()
                if lowered in _REQUEST_DROPPED or lowered in connection_tokens:
                    if lowered == b"upgrade":
                        upgrade_value = value
                    continue
                if lowered == b"host":
                    host_value = value
                    continue
                if strip:
                    if lowered == b"cookie":
                        value = _strip_coder_cookies(value)
                        if not value:
                            continue
                    elif lowered in _SESSION_HEADERS:
                        continue
            elif connection_tokens and name.lower() in connection_tokens:
                continue
            parts += (name, b": ", value, b"\r\n")
        parts += (b"Host: ", host_value, self.forwarded)
        if host_value:
            parts += (b"\r\nX-Forwarded-Host: ", host_value)
        if head.upgrade and upgrade_value:
            parts += (b"\r\nConnection: Upgrade\r\nUpgrade: ", upgrade_value)
        elif head.version == "1.0":
            append(b"\r\nConnection: close")
            self.keep_alive = False
        self.chunked_out = head.chunked
        if head.chunked:
            append(b"\r\nTransfer-Encoding: chunked")
        append(b"\r\n\r\n")
        return b"".join(parts)

    # -- from the upstream -------------------------------------------------------------

    def upstream_head(self, upstream: UpstreamConnection, raw: bytes) -> int:
        """Check and forward a response head: ``_HEAD_OK``, ``_HEAD_INTERIM`` (a 1xx was
        passed on, the real head follows) or ``_HEAD_FAILED`` (the exchange ended here)."""
        head = self.head
        if head is None or self.transport is None:
            return _HEAD_FAILED
        try:
            parsed = parse_response_head(raw)
        except ValueError:
            upstream.reusable = False
            self.pool_stats.upstream_error("invalid")
            self._upstream_error(upstream, 502)
            return _HEAD_FAILED
        status = parsed.status
        if status < 200 and status != 101:
            # Interim answer (100 Continue): pass it on and wait for the real one.
            self.transport.write(raw)
            return _HEAD_INTERIM
        chunked = parsed.chunked
        content_length = parsed.content_length
        upstream_close = parsed.close
        self.status = status
        self.response_started = True
        self.deadline = self.server.now + self.server.limits.idle_timeout
        if upstream_close:
            upstream.reusable = False
        if status == 101:
            if not head.upgrade:
                upstream.reusable = False
                self._upstream_error(upstream, 502)
                return _HEAD_FAILED
            extra = [b"Connection: Upgrade"]
            if parsed.upgrade_line:
                extra.append(parsed.upgrade_line)
            self._write_head(parsed.rebuild(raw, extra))
            self.flush_head()
            self._start_relay(upstream)
            return _HEAD_OK
        if head.upgrade:
            # The upgrade was refused; what follows on this connection is not HTTP we parse.
            self.keep_alive = False
            upstream.reusable = False
        no_body = head.method == "HEAD" or status in (204, 304)
        if no_body:
            upstream.body_remaining = 0
        elif chunked:
            upstream.body_remaining = -3
            upstream.chunks = ChunkScanner()
        elif content_length >= 0:
            upstream.body_remaining = content_length
        else:
            upstream.body_remaining = -2
            upstream.reusable = False
            self.keep_alive = False  # the body ends when the connection does
        extra = [] if self.keep_alive else [b"Connection: close"]
        target = self.target
        if target is not None and target.set_cookie:
            extra.append(b"Set-Cookie: " + target.set_cookie)
        self._write_head(parsed.rebuild(raw, extra))
        return _HEAD_OK

    def _write_head(self, head: bytes) -> None:
        # Held back so the head and the first body bytes leave in one write.
        self.held_head = head

    def flush_head(self) -> None:
        if self.held_head and self.transport is not None:
            self.transport.write(self.held_head)
        self.held_head = b""

    def send_body(self, data: bytes | memoryview) -> None:
        transport = self.transport
        if transport is not None:
            if self.held_head:
                if len(data) <= 16384:
                    transport.write(self.held_head + data)  # one small copy beats writev
                else:
                    transport.writelines((self.held_head, data))
                self.held_head = b""
            else:
                transport.write(data)
            self.deadline = self.server.now + self.server.limits.idle_timeout

    def send_raw(self, data: bytes | memoryview) -> None:
        self.send_body(data)

    def upstream_done(self, upstream: UpstreamConnection) -> None:
        if self.held_head:
            self.flush_head()
        if not self.request_done:
            upstream.reusable = False  # the request body was not all sent
            self.keep_alive = False
        self.upstream = None
        self.server.pool.give_back(upstream)
        self._exchange_done()

    def upstream_failed(self, upstream: UpstreamConnection, status: int, kind: str) -> None:
        self.pool_stats.upstream_error(kind)
        self._upstream_error(upstream, status)

    def _upstream_error(self, upstream: UpstreamConnection, status: int) -> None:
        self.upstream = None
        upstream.client = None
        if upstream.transport is not None:
            upstream.transport.close()
        if self.response_started:
            self._close()
        else:
            self.keep_alive = False
            self._answer_error(status)

    def upstream_lost(self, upstream: UpstreamConnection) -> None:
        if upstream is not self.upstream or self.head is None:
            return
        self.upstream = None
        head = self.head
        if upstream.relaying:
            self._close()
            return
        if upstream.body_remaining == -2 and self.response_started:
            self._exchange_done()  # close-delimited body: the close is the end
            return
        if (
            not upstream.received_any
            and self.reused_upstream
            and not self.retried
            and not head.has_body
            and not head.upgrade
            and head.method in ("GET", "HEAD", "OPTIONS")
            and self.target is not None
        ):
            # A pooled connection the upstream had already closed: try once on a fresh one.
            self.retried = True
            path = self._pending_path()
            self.pause(_PAUSE_WAITING)
            self.task = self.server.loop.create_task(
                self._connect(
                    self.target, self._upstream_head(head, self.target, path.encode("latin-1"))
                ),
                name="proxy-upstream-retry",
            )
            return
        self.pool_stats.upstream_error("reset")
        if self.response_started:
            self._close()
        else:
            self.keep_alive = False
            self._answer_error(502)

    def _pending_path(self) -> str:
        head = self.head
        assert head is not None
        decision = route(head, self.server.table)
        target = self.target
        if type(decision) is AppRoute and target is not None:
            path = _app_path(head, decision, target)
        else:
            path = head.target.decode("latin-1")
        # _proxy adds the prefix again.
        if target is not None and target.path_prefix and target.path_prefix != "/":
            path = target.path_prefix.rstrip("/") + path
        return path

    # -- TCP over websocket ------------------------------------------------------------

    def _open_tunnel(self, head: RequestHead, target: Target) -> None:
        response = handshake(head)
        if response.status_code != 101:
            headers = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in response.headers.raw_items()
                if name in ("Upgrade", "Allow")
            ]
            status = response.status_code
            self._answer(status, _error_page(status), b"text/plain; charset=utf-8", headers)
            return
        tunnel = WebSocketTunnel(self.server.loop, self._tunnel_closed)
        self.pause(_PAUSE_WAITING)
        self.task = self.server.loop.create_task(
            self._connect_tunnel(tunnel, target, response), name="proxy-tunnel-connect"
        )

    async def _connect_tunnel(
        self, tunnel: WebSocketTunnel, target: Target, response: Response
    ) -> None:
        # The 101 goes out only once the agent's port answered, so a refused or silent
        # port is a plain 502 or 504 the client can read.
        try:
            await asyncio.wait_for(
                self.server.loop.create_connection(
                    lambda: tunnel.agent_side, target.host, target.port
                ),
                timeout=self.server.limits.upstream_connect_timeout,
            )
        except TimeoutError:
            self.task = None
            self.pool_stats.upstream_error("timeout")
            self._fail(504)
            return
        except OSError as error:
            self.task = None
            self.pool_stats.upstream_error("refused")
            log.debug("tcp %s:%s unreachable: %s", target.host, target.port, error)
            self._fail(502)
            return
        self.task = None
        if self.closing or self.transport is None:
            if tunnel.agent is not None:
                tunnel.agent.close()
            return
        self.status = 101
        self.response_started = True
        self.pool_stats.concurrent_websockets += 1
        self.relay_started = time.perf_counter()
        self.deadline = _INF
        self.tunnel = tunnel
        leftover = self.upgrade_leftover
        self.upgrade_leftover = b""
        tunnel.start(self.transport, response, leftover)

    def _tunnel_closed(self, to_agent: int, to_client: int) -> None:
        self.pool_stats.bytes_to_upstream += to_agent
        self.pool_stats.bytes_to_client += to_client
        self._forget()

    # -- relay (after 101) -------------------------------------------------------------

    def _start_relay(self, upstream: UpstreamConnection) -> None:
        self.pool_stats.concurrent_websockets += 1
        self.relay_started = time.perf_counter()
        self.deadline = _INF
        upstream.relaying = True
        upstream.reusable = False
        leftover = self.upgrade_leftover
        self.upgrade_leftover = b""
        if leftover and upstream.transport is not None:
            self.pool_stats.bytes_to_upstream += len(leftover)
            upstream.transport.write(leftover)
        if self.server.splice and self._try_splice(upstream):
            return
        self.resume(_PAUSE_UPGRADE | _PAUSE_WAITING)

    def _try_splice(self, upstream: UpstreamConnection) -> bool:
        client_transport = self.transport
        upstream_transport = upstream.transport
        if client_transport is None or upstream_transport is None:
            return False
        if client_transport.get_extra_info("sslcontext") is not None:
            return False
        if upstream_transport.get_extra_info("sslcontext") is not None:
            return False
        if client_transport.get_write_buffer_size() or upstream_transport.get_write_buffer_size():
            return False
        if upstream.head_buffer or upstream.bytes_after_head:
            return False  # bytes already read after the 101 go out through the transport
        client_sock = client_transport.get_extra_info("socket")
        upstream_sock = upstream_transport.get_extra_info("socket")
        if client_sock is None or upstream_sock is None:
            return False
        # Take the sockets out of the transports: dup the descriptors, then drop the
        # transports without shutdown so the connections stay open under the new fds.
        client_fd = os.dup(client_sock.fileno())
        upstream_fd = os.dup(upstream_sock.fileno())
        client_transport.pause_reading()
        upstream_transport.pause_reading()
        upstream.client = None
        self.upstream = None
        self.relay = SpliceRelay(self.server.loop, client_fd, upstream_fd, self._splice_closed)
        self.server.relays.add(self.relay)
        client_transport.abort()
        upstream_transport.abort()
        self.relay.start()
        return True

    def _splice_closed(self, to_upstream: int, to_client: int) -> None:
        self.pool_stats.bytes_to_upstream += to_upstream
        self.pool_stats.bytes_to_client += to_client
        if self.relay is not None:
            self.server.relays.discard(self.relay)
        self._forget()

    def _relay_finished(self) -> None:
        if not self.relay_started:
            return
        self.pool_stats.concurrent_websockets -= 1
        self.pool_stats.websocket_done(self.metric_path, time.perf_counter() - self.relay_started)
        self.relay_started = 0.0
        self._finish_metrics(101)

    def relay_eof(self, other: asyncio.Transport | None) -> None:
        """One side finished sending: pass the half-close on (or close, under TLS)."""
        self.relay_eofs += 1
        if self.relay_eofs >= 2 or other is None or not other.can_write_eof():
            self._close()
            return
        other.write_eof()

    # -- ending ------------------------------------------------------------------------

    def _finish_metrics(self, status: int) -> None:
        head = self.head
        if head is None:
            return
        self.head = None
        self.pool_stats.concurrent_requests -= 1
        self.pool_stats.request_done(
            status, head.method, self.metric_path, time.perf_counter() - self.started
        )

    def _exchange_done(self) -> None:
        if self.held_head:
            self.flush_head()
        self._finish_metrics(self.status)
        self.target = None
        self.upstream = None
        if not self.keep_alive or self.closing:
            self._close()
            return
        if self.discard_body and not self.request_done:
            self._close()
            return
        self.discard_body = False
        self.deadline = self.server.now + self.server.limits.idle_timeout
        if self.queue:
            head, chunks, complete = self.queue.pop(0)
            if not self.queue:
                self.resume(_PAUSE_QUEUE)
            self._start(head)
            for chunk in chunks:
                self._body(chunk)
            if complete:
                self._end()

    def _reject_and_close(self, status: int, reason: str) -> None:
        log.debug("rejected a request from %s: %s", self.peer, reason)
        if self.transport is None:
            return
        if self.head is None:
            self.pool_stats.request_done(status, "-", "/{rejected}", 0.0)
        if not self.response_started:
            self.transport.write(simple_response(status, _error_page(status), close=True))
        self._close()

    def _close(self) -> None:
        self.closing = True
        if self.tunnel is not None:
            self.tunnel.close()
            return
        if self.relay is not None:
            self.relay.close()
            return
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.client = None
            if upstream.transport is not None:
                upstream.transport.close()
        if self.transport is not None:
            self.transport.close()

    def on_timeout(self) -> None:
        """The sweep found this connection past its deadline."""
        self.deadline = _INF
        if self.head is None:
            if self.parser.in_head:
                self.pool_stats.request_done(408, "-", "/{rejected}", 0.0)
                self._reject_and_close(408, "request head not received in time")
            else:
                self._close()  # idle keep-alive connection
            return
        if not self.response_started:
            self.pool_stats.upstream_error("timeout")
            self.keep_alive = False
            if self.upstream is not None:
                self.upstream.reusable = False
                self.upstream.client = None
                if self.upstream.transport is not None:
                    self.upstream.transport.close()
                self.upstream = None
            if self.task is not None:
                self.task.cancel()
                self.task = None
            self._answer_error(504)
        else:
            self._close()

    @property
    def idle(self) -> bool:
        return self.head is None and not self.parser.in_head


def _app_path(head: RequestHead, app: AppRoute, target: Target) -> str:
    """The path an app receives; a terminal goes to the agent's pty endpoint."""
    if app.access_method != "terminal":
        return app.upstream_path
    query = terminal_query(head.query)
    return target.websocket_path + ("?" + query if query else "")


def _strip_coder_cookies(value: bytes) -> bytes:
    """Drop Coder's session and app-token cookies (v2 ``coder_*``, v1 ``session_token``)."""
    if b"coder_" not in value and b"session_token" not in value:
        return value
    kept = [
        part.strip()
        for part in value.split(b";")
        if part.strip() and not part.strip().startswith((b"coder_", b"session_token="))
    ]
    return b"; ".join(kept)


class ProxyServer:
    """Listeners, connections, the upstream pool and the timeout sweep of one worker."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        table: RouteTable,
        limits: Limits,
        local: LocalResponder,
        resolver: AppResolver | None,
        primary: Target | None,
        stats: ProxyStats,
    ) -> None:
        self.loop = loop
        self.table = table
        self.limits = limits
        self.local = local
        self.resolver = resolver
        self.primary = primary
        self.stats = stats
        self.pool = UpstreamPool(loop, limits, stats)
        self.connections: set[ClientConnection] = set()
        self.relays: set[SpliceRelay] = set()
        self.per_client: dict[str, int] = {}
        self.servers: list[asyncio.Server] = []
        self.draining = False
        self.now = loop.time()
        self.splice = splice_supported()
        self.parser_limits = {
            "max_head_bytes": limits.max_head_bytes,
            "max_headers": limits.max_headers,
            "max_request_line_bytes": limits.max_request_line_bytes,
            "max_body_bytes": limits.max_body_bytes,
        }
        self._sweeper: asyncio.TimerHandle | None = None

    def protocol_factory(self, scheme: str) -> Callable[[], ClientConnection]:
        return lambda: ClientConnection(self, scheme)

    async def listen(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> asyncio.Server:
        scheme = "https" if ssl_context is not None else "http"
        server = await self.loop.create_server(
            self.protocol_factory(scheme),
            host,
            port,
            ssl=ssl_context,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=4096,
        )
        self.servers.append(server)
        return server

    def start_sweep(self) -> None:
        self._sweep()

    def _sweep(self) -> None:
        self.now = now = self.loop.time()
        expired = [c for c in self.connections if c.deadline < now]
        for connection in expired:
            connection.on_timeout()
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish, then close what is left."""
        self.draining = True
        for server in self.servers:
            server.close()
        for connection in list(self.connections):
            connection.keep_alive = False
            if connection.idle:
                connection._close()
        deadline = self.loop.time() + timeout
        while (self.connections or self.relays) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for relay in list(self.relays):
            relay.close()
        for connection in list(self.connections):
            connection._close()
        self.pool.close_all()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self.servers:
            await server.wait_closed()
