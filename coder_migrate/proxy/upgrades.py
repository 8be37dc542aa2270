"""After ``101 Switching Protocols``: byte relays, and TCP-over-websocket tunnels.

Bytes a client sent after an upgrade request's head are held by the client connection and
reach the upstream only here, once it answered 101; a refused upgrade ends the connection
after its answer, so those bytes are never parsed as a request that skipped the proxy's
header rewriting. On plain TCP, relays move to :class:`~.relay.SocketRelay` (the sockets
leave their transports; one shared read buffer); under TLS, or when the upstream's first
bytes came with its 101, the two transports relay with backpressure. Idle relays are
closed by the server's sweep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, cast

from websockets.http11 import Response

from coder_migrate.proxy.exchange import UPGRADED
from coder_migrate.proxy.http1 import RequestHead
from coder_migrate.proxy.relay import SocketRelay
from coder_migrate.proxy.responses import Target, error_page
from coder_migrate.proxy.tunnel import WebSocketTunnel, handshake
from coder_migrate.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from coder_migrate.proxy.client import ClientConnection

__all__ = ["open_tunnel", "relay_finished", "start_relay", "to_upstream"]

log = logging.getLogger("coder_migrate.proxy")
_PAUSE_WAITING, _PAUSE_UPGRADE = 2, 8
_INF = float("inf")


def _begin(client: ClientConnection) -> None:
    exchange = client.exchange
    assert exchange is not None
    exchange.phase = UPGRADED
    exchange.status = 101
    client.stats.concurrent_websockets += 1
    client.relay_started = time.perf_counter()


def _take_leftover(client: ClientConnection) -> bytes:
    exchange = client.exchange
    assert exchange is not None
    leftover, exchange.upgrade_leftover = exchange.upgrade_leftover, b""
    if leftover:
        client.server.budget.give(len(leftover))
    return leftover


def start_relay(client: ClientConnection, upstream: UpstreamConnection, more: bool) -> None:
    """The upstream said 101: pass the held bytes on and relay both ways."""
    _begin(client)
    client.deadline = client.server.now + client.server.websocket_idle_timeout
    leftover = _take_leftover(client)
    if leftover and upstream.transport is not None:
        client.stats.bytes_to_upstream += len(leftover)
        upstream.transport.write(leftover)
    if not more and _take_sockets(client, upstream):
        return
    client.resume(_PAUSE_UPGRADE | _PAUSE_WAITING)


def to_upstream(client: ClientConnection, upstream: UpstreamConnection, data: bytes) -> None:
    client.stats.bytes_to_upstream += len(data)
    client.deadline = client.server.now + client.server.websocket_idle_timeout
    if upstream.transport is not None:
        upstream.transport.write(data)


def _take_sockets(client: ClientConnection, upstream: UpstreamConnection) -> bool:
    client_transport = client.transport
    upstream_transport = upstream.transport
    if client_transport is None or upstream_transport is None:
        return False
    for transport in (client_transport, upstream_transport):
        if transport.get_extra_info("sslcontext") is not None:
            return False
        if transport.get_write_buffer_size():
            return False
    if upstream.reader.pending:
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
    client.upstream = None
    client.deadline = _INF  # the sweep watches the relay's own activity
    relay = client.relay = SocketRelay(
        client.server.loop,
        client_fd,
        upstream_fd,
        client.server.budget,
        lambda up, down: _relayed(client, up, down),
    )
    client.server.relays.add(relay)
    client_transport.abort()
    upstream_transport.abort()
    relay.start()
    return True


def _relayed(client: ClientConnection, to_upstream: int, to_client: int) -> None:
    client.stats.bytes_to_upstream += to_upstream
    client.stats.bytes_to_client += to_client
    if client.relay is not None:
        client.server.relays.discard(client.relay)
    client.forget()


def relay_finished(client: ClientConnection) -> None:
    """Metrics of a finished relay or tunnel (called once, when the connection is gone)."""
    exchange = client.exchange
    if not client.relay_started or exchange is None:
        return
    client.stats.concurrent_websockets -= 1
    client.stats.websocket_done(exchange.metric_path, time.perf_counter() - client.relay_started)
    client.relay_started = 0.0
    client.stats.concurrent_requests -= 1
    client.stats.request_done(
        101, exchange.head.method, exchange.metric_path, time.perf_counter_ns() - exchange.started
    )
    client.exchange = None


# -- TCP over websocket ----------------------------------------------------------------------


def open_tunnel(client: ClientConnection, head: RequestHead, target: Target) -> None:
    response = handshake(head)
    if response.status_code != 101:
        headers = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers.raw_items()
            if name in ("Upgrade", "Allow")
        ]
        status = response.status_code
        client._answer(status, error_page(status), b"text/plain; charset=utf-8", headers)
        return
    server = client.server
    tunnel = WebSocketTunnel(
        server.loop,
        lambda to_agent, to_client: _tunnel_closed(client, to_agent, to_client),
        ping_interval=server.hardening.tunnel_ping_interval,
        frame_timeout=server.hardening.frame_timeout,
    )
    client.pause(_PAUSE_WAITING)
    client.task = server.loop.create_task(
        _connect_tunnel(client, tunnel, target, response), name="proxy-tunnel-connect"
    )


async def _connect_tunnel(
    client: ClientConnection, tunnel: WebSocketTunnel, target: Target, response: Response
) -> None:
    # The 101 goes out only once the agent's port answered, so a refused or silent port is
    # a plain 502 or 504 the client can read.
    server = client.server
    try:
        await asyncio.wait_for(
            server.loop.create_connection(
                # A protocol by its methods (see tunnel.py): the cast only informs the checker.
                lambda: cast(asyncio.BaseProtocol, tunnel.agent_side),
                target.host,
                target.port,
            ),
            timeout=server.limits.upstream_connect_timeout,
        )
    except TimeoutError:
        client.task = None
        client.stats.upstream_error("timeout")
        client.fail(504)
        return
    except OSError as error:
        client.task = None
        client.stats.upstream_error("refused")
        log.debug("tcp %s:%s unreachable: %s", target.host, target.port, error)
        client.fail(502)
        return
    client.task = None
    if client.closing or client.transport is None:
        if tunnel.agent is not None:
            tunnel.agent.close()
        return
    _begin(client)
    client.deadline = _INF  # the tunnel keeps itself alive with pings
    client.tunnel = tunnel
    server.tunnels.add(tunnel)
    tunnel.start(client.transport, response, _take_leftover(client))


def _tunnel_closed(client: ClientConnection, to_agent: int, to_client: int) -> None:
    client.stats.bytes_to_upstream += to_agent
    client.stats.bytes_to_client += to_client
    if client.tunnel is not None:
        client.server.tunnels.discard(client.tunnel)
    client.forget()
