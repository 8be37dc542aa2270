"""Connections to apps, agents and the primary: a LIFO keep-alive pool, bytes in and out.

:class:`UpstreamConnection` only moves bytes: a :class:`~.exchange.ResponseReader` says
where heads and bodies end, and the client connection (:class:`UpstreamClient`) decides
what the client sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Final, Protocol, cast

from coder_migrate.proxy.config import Limits
from coder_migrate.proxy.exchange import (
    INTERIM,
    READ_DONE,
    READ_UPGRADED,
    READING_BODY,
    READING_HEAD,
    ResponseError,
    ResponseReader,
    ResponseStart,
)
from coder_migrate.proxy.http1 import ResponseHead
from coder_migrate.proxy.metrics import ProxyStats
from coder_migrate.proxy.responses import Target

__all__ = ["UpstreamClient", "UpstreamConnection", "UpstreamPool", "set_nodelay"]

_POOL_IDLE_PER_TARGET: Final = 256


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class UpstreamClient(Protocol):
    """What an upstream connection reports to the client connection it serves."""

    def upstream_head(
        self, upstream: UpstreamConnection, raw: bytes, more: bool
    ) -> ResponseStart | None: ...

    def send_body(self, data: bytes | memoryview, hold: bool = False) -> None: ...

    def send_raw(self, data: bytes | memoryview) -> None: ...

    def upstream_done(self, upstream: UpstreamConnection) -> None: ...

    def upstream_failed(self, upstream: UpstreamConnection, kind: str) -> None: ...

    def upstream_lost(self, upstream: UpstreamConnection) -> None: ...

    def relay_eof(self, other: asyncio.Transport | None) -> None: ...

    def backpressure(self, on: bool) -> None: ...

    @property
    def transport(self) -> asyncio.Transport | None: ...


class UpstreamConnection:
    """One keep-alive connection to an app, an agent or the primary (an
    :class:`asyncio.Protocol` by its methods, so mypyc compiles it as a native class)."""

    __slots__ = ("client", "key", "last_head", "last_parsed", "reader", "received_any", "transport")

    def __init__(self, key: tuple[str, int, bool]) -> None:
        self.key = key
        # The last response head and what it said: a keep-alive connection to one app
        # mostly repeats it, and comparing bytes is cheaper than hashing them for the cache.
        self.last_head = b""
        self.last_parsed: ResponseHead | None = None
        self.transport: asyncio.Transport | None = None
        self.client: UpstreamClient | None = None
        self.reader = ResponseReader()
        self.received_any = False

    @property
    def reusable(self) -> bool:
        return self.reader.reusable

    def forbid_reuse(self) -> None:
        self.reader.reusable = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reader.reusable = False
        client, self.client = self.client, None
        if client is not None:
            client.upstream_lost(self)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # Bytes nobody asked for: the connection cannot be trusted with a next request.
            self.close()
            return
        self.received_any = True
        reader = self.reader
        if reader.state is READ_UPGRADED:
            client.send_raw(data)
            return
        try:
            offset = self._heads(client, data) if reader.state is READING_HEAD else 0
            if offset < 0:
                return
            if reader.state is READING_BODY and offset < len(data):
                stop = reader.body_end(data, offset)
                chunks = reader.chunks
                hold = chunks is not None and not chunks.sized  # see holds_head_back
                if offset or stop != len(data):
                    client.send_body(memoryview(data)[offset:stop], hold)
                else:
                    client.send_body(data, hold)
            elif reader.upgraded and offset < len(data):
                client.send_raw(memoryview(data)[offset:])
                return
        except ResponseError:
            client.upstream_failed(self, "invalid")
            return
        if reader.state is READ_DONE and self.client is client:
            client.upstream_done(self)

    def _heads(self, client: UpstreamClient, data: bytes) -> int:
        """Pass response heads to the client; the offset after the final one, or -1."""
        offset = 0
        if not self.reader.pending:
            # The usual case, a whole head at the start of a read, without the general loop.
            last = self.last_head
            if last and data.startswith(last):
                # The same head as the last response (it ends at its only blank line, so
                # the head in data ends there too): no search, no copy, the parse cached.
                end = len(last) - 4
                head = last
            else:
                end = data.find(b"\r\n\r\n")
                head = data[: end + 4] if end >= 0 else b""
            if end >= 0:
                offset = end + 4
                start = client.upstream_head(self, head, offset < len(data))
                if start is None or self.client is not client:
                    return -1
                if start is not INTERIM:
                    return offset
        while True:
            raw, offset = self.reader.take_head(data, offset)
            if raw is None:
                return -1
            start = client.upstream_head(self, raw, offset < len(data))
            if start is None or self.client is not client:
                return -1
            if start is not INTERIM:
                return offset

    def eof_received(self) -> bool | None:
        client = self.client
        if self.reader.state is READ_UPGRADED and client is not None:
            client.relay_eof(client.transport)
            return True
        return None

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.backpressure(True)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.backpressure(False)

    def close(self) -> None:
        self.reader.reusable = False
        self.client = None
        if self.transport is not None:
            self.transport.close()


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
        reader = connection.reader
        if not reader.reusable or transport is None or transport.is_closing():
            connection.close()
            return
        connection.client = None
        reader.reset()
        connection.received_any = False
        idle = self.idle.get(connection.key)
        if idle is None:  # not setdefault: that builds a new empty list on every call
            idle = self.idle[connection.key] = []
        if len(idle) >= _POOL_IDLE_PER_TARGET:
            connection.close()
            return
        idle.append(connection)

    async def connect(self, target: Target) -> UpstreamConnection:
        """A new connection; raises ``TimeoutError`` or ``OSError``."""
        key = target.key
        ssl_context = self.ssl_context if target.tls else None
        _, protocol = await asyncio.wait_for(
            self.loop.create_connection(
                lambda: cast(asyncio.Protocol, UpstreamConnection(key)),
                target.host,
                target.port,
                ssl=ssl_context,
                server_hostname=(target.server_hostname or target.host) if target.tls else None,
            ),
            timeout=self.limits.upstream_connect_timeout,
        )
        return cast(UpstreamConnection, protocol)

    def close_all(self) -> None:
        for idle in self.idle.values():
            for connection in idle:
                connection.close()
        self.idle.clear()
