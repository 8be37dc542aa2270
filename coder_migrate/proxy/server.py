"""The data path's shell: listeners, the connection set, caps, budgets and the timeout sweep.

One :class:`~.client.ClientConnection` per accepted socket (:mod:`.client`); the exchange
itself is sans-IO (:mod:`.exchange`, :mod:`.http1`, :mod:`.router`); upgraded connections are
relays or tunnels (:mod:`.upgrades`). Timeouts are checked by one sweep a second rather than
a timer per request; the sweep also pings idle tunnels, closes idle relays and, after many
connections closed, hands freed memory back to the system. Nothing here logs per request at
info level, and metrics are plain integers.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import ssl
from collections.abc import Callable
from typing import cast

from coder_migrate.proxy.admission import BufferBudget, ClientAddresses, ConnectionCaps
from coder_migrate.proxy.client import ClientConnection
from coder_migrate.proxy.config import Hardening, Limits
from coder_migrate.proxy.exchange import ChunkScanner
from coder_migrate.proxy.metrics import ProxyStats
from coder_migrate.proxy.relay import SocketRelay
from coder_migrate.proxy.responses import (
    Answer,
    AppResolver,
    LocalResponder,
    Target,
    simple_response,
)
from coder_migrate.proxy.router import RouteTable
from coder_migrate.proxy.tunnel import WebSocketTunnel
from coder_migrate.proxy.upstream import UpstreamPool

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

# A connection's transport stops the other side's reads above this many buffered bytes.
WRITE_HIGH_WATER = 64 * 1024
# After this many connections closed since the last trim, give freed heap back (glibc).
_TRIM_AFTER_CLOSED = 1000


def _malloc_trim() -> Callable[[], None]:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = libc.malloc_trim if libc is not None else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda: None
    return lambda: trim(0)


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
        hardening: Hardening | None = None,
    ) -> None:
        self.loop = loop
        self.table = table
        self.limits = limits
        self.hardening = hardening = hardening or Hardening()
        self.local = local
        self.resolver = resolver
        self.primary = primary
        self.stats = stats
        self.pool = UpstreamPool(loop, limits, stats)
        self.connections: set[ClientConnection] = set()
        self.relays: set[SocketRelay] = set()
        self.tunnels: set[WebSocketTunnel] = set()
        self.caps = ConnectionCaps(
            total=hardening.max_connections, per_client=limits.max_connections_per_client
        )
        self.addresses = ClientAddresses(
            hardening.trusted_origins,
            header=(hardening.trusted_header or "x-forwarded-for").encode(),
            proxy_protocol=hardening.proxy_protocol,
        )
        if not hardening.trusted_header and not hardening.proxy_protocol:
            self.addresses = ClientAddresses()  # nothing to trust without a source of truth
        # Checked on every request head: the client is named by a trusted balancer's header.
        self.client_from_header = bool(self.addresses.trusted) and not self.addresses.proxy_protocol
        self.budget = BufferBudget(hardening.buffer_budget_bytes)
        self.websocket_idle_timeout = hardening.websocket_idle_timeout
        # Read on every request: plain floats of this object rather than the settings'.
        self.header_timeout = limits.header_timeout
        self.idle_timeout = limits.idle_timeout
        self.response_timeout = limits.upstream_response_timeout
        self.clock = loop.time
        self.write_high_water = WRITE_HIGH_WATER
        self.servers: list[asyncio.Server] = []
        self.draining = False
        self.now = loop.time()
        self.parser_limits = {
            "max_head_bytes": limits.max_head_bytes,
            "max_headers": limits.max_headers,
            "max_request_line_bytes": limits.max_request_line_bytes,
            "max_body_bytes": limits.max_body_bytes,
        }
        self._sweeper: asyncio.TimerHandle | None = None
        self._trim = _malloc_trim()
        self._closed_since_trim = 0
        self._peak_connections = 0

    def protocol_factory(self, scheme: str) -> Callable[[], asyncio.Protocol]:
        # A protocol by its methods (see ClientConnection): the cast only informs the checker.
        return lambda: cast(asyncio.Protocol, ClientConnection(self, scheme))

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
        for connection in [c for c in self.connections if c.deadline < now]:
            connection.on_timeout()
        idle_limit = now - self.websocket_idle_timeout
        for relay in [r for r in self.relays if r.last_activity < idle_limit]:
            relay.close()
        for tunnel in list(self.tunnels):
            tunnel.tick(now)
        self._give_memory_back()
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def _give_memory_back(self) -> None:
        count = len(self.connections)
        if count > self._peak_connections:
            self._peak_connections = count
            return
        if self._peak_connections - count >= _TRIM_AFTER_CLOSED:
            # Many connections closed: collect what they left in cycles and return the
            # freed heap, so a burst does not leave the worker at its peak size.
            self._peak_connections = count
            gc.collect()
            self._trim()

    async def drain(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish, then close what is left."""
        self.draining = True
        for server in self.servers:
            server.close()
        for connection in list(self.connections):
            if connection.exchange is not None:
                connection.exchange.keep_alive = False
            if connection.idle:
                connection.close()
        deadline = self.loop.time() + timeout
        while (self.connections or self.relays) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for relay in list(self.relays):
            relay.close()
        for connection in list(self.connections):
            connection.close()
        self.pool.close_all()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self.servers:
            await server.wait_closed()
