"""The client connection's side that talks to upstreams: heads out, answers back.

A mixin of :class:`~.client.ClientConnection`, kept apart so each module stays small: it
sends the request head built by :func:`~.exchange.upstream_request_head`, takes response
heads through the upstream's :class:`~.exchange.ResponseReader`, and writes what the client
receives. A pooled connection that dies before answering an idempotent request is retried
once on a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Final, cast

from coder_migrate.proxy import upgrades
from coder_migrate.proxy.exchange import (
    CONNECTING,
    INTERIM,
    READING_BODY,
    STREAMING,
    SWITCHED,
    UNTIL_CLOSE,
    WAITING,
    Exchange,
    ResponseError,
    ResponseStart,
    client_response_head,
    upstream_request_head,
)
from coder_migrate.proxy.http1 import parse_response_head
from coder_migrate.proxy.metrics import ProxyStats
from coder_migrate.proxy.responses import Target
from coder_migrate.proxy.router import AppRoute, route, terminal_query
from coder_migrate.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from coder_migrate.proxy.client import ClientConnection
    from coder_migrate.proxy.http1 import RequestHead
    from coder_migrate.proxy.server import ProxyServer

__all__ = ["UpstreamSide", "app_path"]

log = logging.getLogger("coder_migrate.proxy")
_PAUSE_WAITING: Final = 2
_LAST_HEAD_LIMIT: Final = 4096


class UpstreamSide:
    """Upstream-facing methods of a client connection (see :mod:`.client`)."""

    server: ProxyServer
    stats: ProxyStats
    transport: asyncio.Transport | None
    exchange: Exchange | None
    upstream: UpstreamConnection | None
    task: asyncio.Task[None] | None
    forwarded: bytes
    closing: bool
    deadline: float
    relay_started: float
    sent_for: RequestHead | None
    sent_target: Target | None
    sent_path: bytes
    sent_head: bytes

    # Provided by the connection class.
    def pause(self, reason: int) -> None:
        raise NotImplementedError

    def resume(self, reason: int) -> None:
        raise NotImplementedError

    def fail(self, status: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _exchange_done(self) -> None:
        raise NotImplementedError

    def _proxy(self, target: Target, path: str | bytes, *, fresh: bool = False) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.target = target
        if type(path) is str:
            if target.path_prefix and target.path_prefix != "/":
                path = target.path_prefix.rstrip("/") + path
            path = path.encode("latin-1")
        head = exchange.head
        if head is self.sent_for and target is self.sent_target and path == self.sent_path:
            request_head = self.sent_head  # the same request again: a pure function of these
        else:
            request_head = upstream_request_head(
                head,
                path,  # type: ignore[arg-type]  # bytes by now (type() narrows no further)
                self.forwarded,
                target.strip_credentials,
            )
            self.sent_for, self.sent_target = head, target
            self.sent_path = path  # type: ignore[assignment]  # bytes, as above
            self.sent_head = request_head
        server = self.server
        upstream = None if fresh else server.pool.take(target.key)
        if upstream is not None:
            exchange.reused_upstream = True
            self._send_head(upstream, request_head)
            return
        exchange.reused_upstream = False
        exchange.phase = CONNECTING
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
            self.stats.upstream_error("timeout")
            self.fail(504)
            return
        except (OSError, ssl.SSLError) as error:
            self.task = None
            self.stats.upstream_error("refused")
            log.debug("upstream %s:%s unreachable: %s", target.host, target.port, error)
            self.fail(502)
            return
        self.task = None
        if self.closing or self.exchange is None:
            self.server.pool.give_back(upstream)
            return
        self.resume(_PAUSE_WAITING)
        self._send_head(upstream, request_head)

    def _send_head(self, upstream: UpstreamConnection, request_head: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.phase = WAITING
        self.upstream = upstream
        upstream.client = self  # type: ignore[assignment]  # the mixin is part of one
        transport = upstream.transport
        assert transport is not None
        buffered, exchange.body_buffer = exchange.body_buffer, None
        if not buffered:
            transport.write(request_head)
            return
        parts = [request_head]
        for chunk in buffered:
            if exchange.head.chunked:
                parts.append(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunk else b"0\r\n\r\n")
            else:
                parts.append(chunk)
        transport.writelines(parts)
        self.server.budget.give(exchange.body_buffered)
        exchange.body_buffered = 0
        self.resume(_PAUSE_WAITING)

    # -- from the upstream -------------------------------------------------------------

    def upstream_head(
        self, upstream: UpstreamConnection, raw: bytes, more: bool
    ) -> ResponseStart | None:
        """Check a response head and prepare the client's; ``None`` when the exchange ended."""
        exchange = self.exchange
        if exchange is None or self.transport is None:
            return None
        try:
            parsed = upstream.last_parsed
            if parsed is None or raw != upstream.last_head:
                parsed = parse_response_head(raw)
                if len(raw) <= _LAST_HEAD_LIMIT:  # bounded memory per pooled connection
                    upstream.last_head = raw
                    upstream.last_parsed = parsed
            start = upstream.reader.begin(
                parsed, method=exchange.head.method, upgrade=exchange.head.upgrade
            )
        except (ValueError, ResponseError) as error:
            log.debug("unusable response from upstream: %s", error)
            self.upstream_failed(upstream, "invalid")
            return None
        if start is INTERIM:
            self.transport.write(raw)  # 100 Continue: pass it on, the real head follows
            return start
        exchange.status = parsed.status
        exchange.phase = STREAMING
        self.deadline = self.server.now + self.server.idle_timeout
        if start is SWITCHED:
            exchange.response_started = True
            self.transport.write(client_response_head(parsed, raw, False))
            upgrades.start_relay(cast("ClientConnection", self), upstream, more)
            return start
        if exchange.head.upgrade:
            exchange.keep_alive = False  # refused upgrade: the held bytes are never served
        target = exchange.target
        exchange.held_head = client_response_head(
            parsed, raw, exchange.keep_alive, target.set_cookie if target is not None else b""
        )
        return start

    def send_body(self, data: bytes | memoryview, hold: bool = False) -> None:
        transport = self.transport
        exchange = self.exchange
        if transport is None or exchange is None:
            return
        self.stats.bytes_to_client += len(data)
        held = exchange.held_head
        if held:
            if hold:
                exchange.held_head = held + data  # framing not yet checked: keep it back
                return
            exchange.held_head = b""
            exchange.response_started = True
            if len(data) <= 16384:
                transport.write(held + data)  # one small copy beats writev
            else:
                transport.writelines((held, data))
        else:
            transport.write(data)
        self.deadline = self.server.now + self.server.idle_timeout

    def send_raw(self, data: bytes | memoryview) -> None:
        if self.transport is not None:
            self.stats.bytes_to_client += len(data)
            self.transport.write(data)
            self.deadline = self.server.now + self.server.websocket_idle_timeout

    def _flush_head(self) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.held_head and self.transport is not None:
            self.transport.write(exchange.held_head)
            exchange.held_head = b""
            exchange.response_started = True

    def upstream_done(self, upstream: UpstreamConnection) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.held_head:
            self._flush_head()
        if exchange is not None and not exchange.request_done:
            upstream.forbid_reuse()  # the request body was not all sent
            exchange.keep_alive = False
        self.upstream = None
        self.server.pool.give_back(upstream)
        self._exchange_done()

    def upstream_failed(self, upstream: UpstreamConnection, kind: str) -> None:
        self.stats.upstream_error(kind)
        if upstream is self.upstream:
            self.upstream = None
        upstream.close()
        self.fail(502)

    def upstream_lost(self, upstream: UpstreamConnection) -> None:
        exchange = self.exchange
        if upstream is not self.upstream or exchange is None:
            return
        self.upstream = None
        if self.relay_started:
            self.close()
            return
        reader = upstream.reader
        if reader.state is READING_BODY and reader.framing is UNTIL_CLOSE:
            self._flush_head()
            self._exchange_done()  # close-delimited body: the close is the end
            return
        if not upstream.received_any and exchange.can_retry:
            # A pooled connection the upstream had already closed: try once on a fresh one.
            exchange.retried = True
            self._retry(exchange)
            return
        self.stats.upstream_error("reset")
        self.fail(502)

    def _retry(self, exchange: Exchange) -> None:
        target = exchange.target
        assert target is not None
        decision = route(exchange.head, self.server.table)
        if type(decision) is AppRoute:
            self._proxy(target, app_path(exchange.head, decision, target), fresh=True)
        else:
            self._proxy(target, exchange.head.target, fresh=True)


def app_path(head: RequestHead, app: AppRoute, target: Target) -> str:
    """The path an app receives; a terminal goes to the agent's pty endpoint."""
    if app.access_method != "terminal":
        return app.upstream_path
    query = terminal_query(head.query)
    return target.websocket_path + ("?" + query if query else "")
