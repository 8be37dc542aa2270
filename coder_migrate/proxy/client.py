"""One client socket: bytes in, bytes out; the decisions live in the sans-IO layers.

:class:`ClientConnection` feeds the request parser (:mod:`.http1`), asks the router what to
do, answers locally or relays through an upstream from the pool, and hands upgraded
connections to :mod:`.upgrades`. What the exchange knows is an :class:`~.exchange.Exchange`
with a named phase; heads are built by the pure functions of :mod:`.exchange`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final, cast

from coder_migrate.proxy import upgrades
from coder_migrate.proxy.admission import ProxyHeaderError, parse_proxy_header
from coder_migrate.proxy.client_upstream import UpstreamSide, app_path
from coder_migrate.proxy.exchange import (
    ANSWERED,
    UPGRADED,
    Exchange,
)
from coder_migrate.proxy.http1 import HttpReject, RequestHead, RequestParser
from coder_migrate.proxy.responses import Answer, AppResolver, Target, error_page, simple_response
from coder_migrate.proxy.router import AppRoute, Decision, Forward, Local, Reject, route
from coder_migrate.proxy.upstream import UpstreamConnection, set_nodelay

if TYPE_CHECKING:
    from coder_migrate.proxy.relay import SocketRelay
    from coder_migrate.proxy.server import ProxyServer
    from coder_migrate.proxy.tunnel import WebSocketTunnel

__all__ = ["ClientConnection"]

log = logging.getLogger("coder_migrate.proxy")

_BODY_BUFFER_LIMIT: Final = 1 << 20
_UPGRADE_HOLD_LIMIT: Final = 64 * 1024
_INF: Final = float("inf")
# Why a client connection stopped reading (bit flags).
PAUSE_BACKPRESSURE: Final = 1
PAUSE_WAITING: Final = 2
PAUSE_QUEUE: Final = 4
PAUSE_UPGRADE: Final = 8
PAUSE_BUDGET: Final = 16
_NO_DECISION: Final = Reject(500, "nothing routed yet")


class ClientConnection(UpstreamSide):
    """One client socket: parse, route, answer or relay; one request at a time.

    An :class:`asyncio.Protocol` by its methods, not by inheritance: without a Python base
    class mypyc compiles it as a native class (:mod:`.hotpath`), with fixed attribute slots.
    """

    def __init__(self, server: ProxyServer, scheme: str) -> None:
        self.server = server
        self.scheme = scheme
        self.stats = server.stats
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.client_key = ""  # the address the caps count (after trusted balancers)
        self.forwarded = b""
        self.parser: RequestParser | None = RequestParser(self, **server.parser_limits)
        self.deadline = _INF
        self.head_armed = False  # the head deadline runs (first byte of a request seen)
        self.awaiting_proxy_header = b""
        self.paused = 0
        self.closing = False
        self.counted = False
        self.exchange: Exchange | None = None
        self.upstream: UpstreamConnection | None = None
        self.queue: list[tuple[RequestHead, list[bytes], bool]] = []
        self.queued_bytes = 0
        self.task: asyncio.Task[None] | None = None
        self.relay: SocketRelay | None = None
        self.tunnel: WebSocketTunnel | None = None
        self.relay_started = 0.0
        self.relay_eofs = 0
        # The last request head routed and its decision; the last head sent upstream (see
        # UpstreamSide._proxy): a keep-alive client repeating a request reuses both.
        self.routed_head: RequestHead | None = None
        self.routed: Decision = _NO_DECISION
        self.sent_for: RequestHead | None = None
        self.sent_target: Target | None = None
        self.sent_path = b""
        self.sent_head = b""

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        trusted = server.addresses.is_trusted(self.peer)
        if server.draining or not server.caps.admit(self.peer, exempt=trusted):
            self.stats.upstream_error("capped")
            self.transport.write(simple_response(503, error_page(503), close=True))
            self.transport.close()
            self.closing = True
            return
        self.counted = True
        self.client_key = self.peer
        server.connections.add(self)
        self.stats.connections += 1
        self._set_client(self.peer)
        if trusted and server.addresses.proxy_protocol:
            self.awaiting_proxy_header = b" "  # marks "expected"; the bytes come later
        set_nodelay(transport)
        self.transport.set_write_buffer_limits(high=server.write_high_water)
        # The loop's clock, not the sweep's (up to a second old): a short header timeout
        # must not expire before the client had the whole of it.
        self.deadline = server.clock() + server.header_timeout

    def _set_client(self, address: str) -> None:
        self.sent_for = None  # the upstream head names the client: build it anew
        self.forwarded = b"\r\nX-Forwarded-For: %s\r\nX-Forwarded-Proto: %s" % (
            address.encode(),
            self.scheme.encode(),
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self.relay is not None and not self.relay.closed:
            return  # the sockets live on in the socket relay; it ends the exchange
        self.forget()

    def forget(self) -> None:
        """The connection is gone: give back every count and break every reference cycle."""
        self.closing = True
        server = self.server
        if self.counted:
            self.counted = False
            server.connections.discard(self)
            server.caps.release(self.client_key)
            self.stats.connections -= 1
        server.budget.forget(self)
        self._release_buffers()
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self._drop_upstream()
        if self.exchange is not None:
            if self.relay_started:
                upgrades.relay_finished(self)
            else:
                self._finish_metrics(self.exchange.status or 499)
        self.parser = None  # the parser points back here; let the memory go at once
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        upstream = self.upstream
        if self.relay_started and upstream is not None:
            upgrades.to_upstream(self, upstream, data)
            return
        if self.awaiting_proxy_header:
            data = self._proxy_header(data)
            if not data:
                return
        if self.exchange is None and not self.head_armed:
            # Absolute: from the first byte of a request (leading CRLF included) to the end
            # of its head; nothing the client sends meanwhile moves it.
            self.head_armed = True
            server = self.server
            self.deadline = min(self.deadline, server.clock() + server.header_timeout)
        parser = self.parser
        if parser is None:
            return
        try:
            leftover = parser.feed(data)
        except HttpReject as reject:
            self._reject_and_close(reject.status, reject.reason)
            return
        if leftover is not None:
            self._hold_upgrade_bytes(leftover)

    def _proxy_header(self, data: bytes) -> bytes:
        buffered = self.awaiting_proxy_header.lstrip(b" ") + data
        try:
            parsed = parse_proxy_header(buffered)
        except ProxyHeaderError as error:
            self._reject_and_close(400, str(error))
            return b""
        if parsed is None:
            self.awaiting_proxy_header = b" " + buffered
            return b""
        address, length = parsed
        self.awaiting_proxy_header = b""
        if address and not self._rekey(address):
            self._reject_and_close(503, "per-client connection cap")
            return b""
        return buffered[length:]

    def _rekey(self, address: str) -> bool:
        if address == self.client_key:
            return True
        if not self.server.caps.rekey(self.client_key, address):
            self.stats.upstream_error("capped")
            return False
        self.client_key = address
        self._set_client(address)
        return True

    def eof_received(self) -> bool | None:
        upstream = self.upstream
        if self.relay_started and upstream is not None:
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

    def backpressure(self, on: bool) -> None:
        if on:
            self.pause(PAUSE_BACKPRESSURE)
        else:
            self.resume(PAUSE_BACKPRESSURE)

    def _buffer(self, size: int) -> None:
        """Account ``size`` buffered bytes; over the global budget, stop reading until
        some are given back."""
        budget = self.server.budget
        budget.take(size)
        if budget.exhausted:
            self.pause(PAUSE_BUDGET)
            budget.wait(self, lambda: self.resume(PAUSE_BUDGET))

    def _release_buffers(self) -> None:
        exchange = self.exchange
        held = self.queued_bytes
        if exchange is not None:
            held += exchange.body_buffered + len(exchange.upgrade_leftover)
            exchange.body_buffered = 0
            exchange.upgrade_leftover = b""
        self.queued_bytes = 0
        if held:
            self.server.budget.give(held)

    def _hold_upgrade_bytes(self, leftover: bytes) -> None:
        # Bytes after an upgrade request's head go nowhere before the upstream says 101.
        self.pause(PAUSE_UPGRADE)
        exchange = self.exchange
        if exchange is None or not leftover:
            return
        if len(exchange.upgrade_leftover) + len(leftover) > _UPGRADE_HOLD_LIMIT:
            self._reject_and_close(400, "too many bytes before the upgrade was answered")
            return
        exchange.upgrade_leftover += leftover
        self._buffer(len(leftover))

    # -- parser sink -------------------------------------------------------------------

    def on_request_head(self, head: RequestHead) -> None:
        self.head_armed = False
        if self.exchange is not None:
            # Pipelined: keep it (and its body) until the current exchange ends.
            self.queue.append((head, [], False))
            self.pause(PAUSE_QUEUE)
            return
        if self.server.client_from_header:
            client = self.server.addresses.from_header(self.peer, head.headers)
            if not self._rekey(client):
                raise HttpReject(503, "per-client connection cap")
        self._start(head)

    def on_request_body(self, chunk: bytes) -> None:
        if self.queue:
            self.queue[-1][1].append(chunk)
            self.queued_bytes += len(chunk)
            self._buffer(len(chunk))
            if self.queued_bytes > _BODY_BUFFER_LIMIT:
                raise HttpReject(413, "pipelined body too large")
            return
        self._body(chunk)

    def _body(self, chunk: bytes) -> None:
        exchange = self.exchange
        if exchange is None or exchange.discard_body:
            return
        self.deadline = self.server.now + self.server.idle_timeout  # progress
        upstream = self.upstream
        self.stats.bytes_to_upstream += len(chunk)
        if exchange.body_buffer is not None or upstream is None or upstream.transport is None:
            if exchange.body_buffer is None:
                exchange.body_buffer = []
            exchange.body_buffer.append(chunk)
            exchange.body_buffered += len(chunk)
            self._buffer(len(chunk))
            if exchange.body_buffered > _BODY_BUFFER_LIMIT:
                self.pause(PAUSE_WAITING)
            return
        if exchange.head.chunked:
            upstream.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        else:
            upstream.transport.write(chunk)

    def on_request_end(self) -> None:
        if self.queue:
            head, chunks, _ = self.queue[-1]
            self.queue[-1] = (head, chunks, True)
            return
        exchange = self.exchange
        if exchange is None:
            return
        exchange.request_done = True
        upstream = self.upstream
        if not exchange.head.chunked or exchange.discard_body:
            return
        if exchange.body_buffer is not None or upstream is None or upstream.transport is None:
            if exchange.body_buffer is None:
                exchange.body_buffer = []
            exchange.body_buffer.append(b"")  # marks the end of a chunked body
        else:
            upstream.transport.write(b"0\r\n\r\n")

    # -- exchanges ---------------------------------------------------------------------

    def _start(self, head: RequestHead) -> None:
        server = self.server
        keep_alive = head.keep_alive and not server.draining
        exchange = self.exchange = Exchange(head, keep_alive=keep_alive)
        self.stats.concurrent_requests += 1
        self.deadline = server.now + server.response_timeout
        if head is self.routed_head:
            decision = self.routed  # a repeated request (RequestParser.feed): route is pure
        else:
            decision = route(head, server.table)
            self.routed_head, self.routed = head, decision
        exchange.metric_path = decision.metric_path
        kind = type(decision)
        if kind is Forward:
            if server.primary is None:
                self._answer_error(502)
            else:
                self._proxy(server.primary, head.target)
        elif kind is AppRoute:
            self._app(head, cast(AppRoute, decision))
        elif kind is Local:
            self._local(head, cast(Local, decision))
        else:
            reject = cast(Reject, decision)
            location = [(b"Location", reject.location.encode())] if reject.location else None
            body = b"" if location else error_page(reject.status)
            self._answer(reject.status, body, b"text/plain; charset=utf-8", location)

    def _app(self, head: RequestHead, app: AppRoute) -> None:
        resolver = self.server.resolver
        if resolver is None:
            self._answer_error(404)
            return
        target = resolver.resolve_cached(head, app)
        if target is not None:
            self._to_app(head, app, target)
            return
        self.pause(PAUSE_WAITING)
        self.task = self.server.loop.create_task(
            self._resolve(resolver, self.exchange, app), name="proxy-resolve-app"
        )

    def _local(self, head: RequestHead, local: Local) -> None:
        if local.kind == "healthz-report":
            self.pause(PAUSE_WAITING)
            self.task = self.server.loop.create_task(
                self._report(self.exchange), name="proxy-report"
            )
            return
        answer = self.server.local.answer(local.kind, head)
        self._answer(answer.status, answer.body, answer.content_type, answer.headers)

    async def _resolve(
        self, resolver: AppResolver, exchange: Exchange | None, app: AppRoute
    ) -> None:
        assert exchange is not None
        head = exchange.head
        try:
            result = await resolver.resolve(head, app, self.scheme)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("authorising an app request failed")
            result = Answer(502, error_page(502), b"text/plain")
        finally:
            self.task = None
        # The exchange, not its head: a repeated request shares its head with the last one.
        if self.closing or self.exchange is not exchange:
            return
        self.resume(PAUSE_WAITING)
        if isinstance(result, Answer):
            self._answer(result.status, result.body, result.content_type, result.headers)
        else:
            self._to_app(head, app, result)

    def _to_app(self, head: RequestHead, app: AppRoute, target: Target) -> None:
        if app.access_method == "tcp":
            upgrades.open_tunnel(self, head, target)
        else:
            self._proxy(target, app_path(head, app, target))

    async def _report(self, exchange: Exchange | None) -> None:
        try:
            answer = await self.server.local.health_report()
        finally:
            self.task = None
        if self.closing or exchange is None or self.exchange is not exchange:
            return
        self.resume(PAUSE_WAITING)
        self._answer(answer.status, answer.body, answer.content_type, answer.headers)

    def _answer_error(self, status: int) -> None:
        self._answer(status, error_page(status), b"text/plain; charset=utf-8", None)

    def _answer(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        headers: list[tuple[bytes, bytes]] | None,
    ) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.refuse_body()
        exchange.status = status
        exchange.held_head = b""
        exchange.response_started = True
        if self.transport is not None:
            self.transport.write(
                simple_response(
                    status,
                    body,
                    content_type=content_type,
                    headers=headers,
                    close=not exchange.keep_alive,
                    head_only=exchange.head.method == "HEAD",
                )
            )
        self._exchange_done()

    def fail(self, status: int) -> None:
        """The exchange cannot go on: ``status`` if the client has no answer yet."""
        exchange = self.exchange
        if exchange is None or self.closing:
            return
        self.resume(PAUSE_WAITING)
        if exchange.response_started:
            self.close()
            return
        exchange.keep_alive = False
        self._answer_error(status)

    # -- ending ------------------------------------------------------------------------

    def _finish_metrics(self, status: int) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        self.stats.concurrent_requests -= 1
        self.stats.request_done(
            status,
            exchange.head.method,
            exchange.metric_path,
            time.perf_counter_ns() - exchange.started,
        )

    def _exchange_done(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.phase = ANSWERED
        if exchange.body_buffered or exchange.upgrade_leftover or self.queued_bytes:
            self._release_buffers()
        keep_alive = exchange.keep_alive and not self.closing
        if exchange.discard_body and not exchange.request_done:
            keep_alive = False
        self._finish_metrics(exchange.status)
        self.upstream = None
        if not keep_alive:
            self.close()
            return
        parser = self.parser
        self.head_armed = parser is not None and parser.in_head
        server = self.server
        timeout = server.header_timeout if self.head_armed else server.idle_timeout
        self.deadline = server.now + timeout
        if self.queue:
            head, chunks, complete = self.queue.pop(0)
            if not self.queue:
                self.resume(PAUSE_QUEUE)
            self.server.budget.give(self.queued_bytes)
            self.queued_bytes = 0
            self._start(head)
            for chunk in chunks:
                self._body(chunk)
            if complete:
                self.on_request_end()

    def _reject_and_close(self, status: int, reason: str) -> None:
        log.debug("rejected a request from %s: %s", self.peer, reason)
        if self.transport is None:
            return
        exchange = self.exchange
        if exchange is None:
            self.stats.request_done(status, "-", "/{rejected}", 0)
        if exchange is None or not exchange.response_started:
            self.transport.write(simple_response(status, error_page(status), close=True))
        if exchange is not None:
            exchange.status = status
        self.close()

    def _drop_upstream(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()

    def close(self) -> None:
        self.closing = True
        if self.tunnel is not None:
            self.tunnel.close()
            return
        if self.relay is not None:
            self.relay.close()
            return
        self._drop_upstream()
        if self.transport is not None:
            self.transport.close()

    def relay_eof(self, other: asyncio.Transport | None) -> None:
        """One side finished sending: pass the half-close on (or close, under TLS)."""
        self.relay_eofs += 1
        if self.relay_eofs >= 2 or other is None or not other.can_write_eof():
            self.close()
            return
        other.write_eof()

    def on_timeout(self) -> None:
        """The sweep found this connection past its deadline."""
        self.deadline = _INF
        exchange = self.exchange
        if exchange is None:
            if self.head_armed:
                self._reject_and_close(408, "request head not received in time")
            else:
                self.close()  # idle keep-alive connection, or one that never spoke
            return
        if exchange.response_started or exchange.phase is UPGRADED:
            self.close()
            return
        self.stats.upstream_error("timeout")
        exchange.keep_alive = False
        self._drop_upstream()
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self.resume(PAUSE_WAITING)
        self._answer_error(504)

    @property
    def idle(self) -> bool:
        return self.exchange is None and not self.head_armed
