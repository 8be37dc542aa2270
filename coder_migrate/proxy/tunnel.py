"""TCP over websocket: a client's websocket carries the bytes of a TCP connection to an agent.

Unlike the other upgraded routes, the proxy ends this websocket itself. The handshake is
checked by the ``websockets`` package (``ServerProtocol.accept``); frames are read in pieces
by :class:`~.wsframes.FrameReader`, so every payload piece goes to the agent's port as it
arrives and no frame is ever held whole. What the agent sends comes back in binary frames,
one per read. A transport that reports ``pause_writing`` stops reading on the other side, so
each direction holds at most a transport's high-water mark plus one read.

Both sides are buffered protocols (``get_buffer``/``buffer_updated``, which uvloop uses for a
protocol that has them): the kernel reads straight into one buffer shared by every tunnel
of the process, up to :data:`READ_SIZE` bytes at a time. That is safe because a read is
handled whole before the loop reads again, and nothing keeps the buffer: a client's payload
leaves it unmasked (a new object), the agent's bytes leave it as one frame (a copy with its
header in front). So a client's bytes are copied once in user space instead of twice, the
agent's leave in one write, and an idle tunnel holds no read buffer. ``data_received``
serves the bytes that came with the handshake, and loops without buffered protocols.

Keep-alive: when neither side sent anything for ``ping_interval`` the proxy pings the
client; no pong within another interval ends the tunnel. A frame's buffered part (its
header, a control frame) must arrive within ``frame_timeout``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import cast

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from coder_migrate.proxy.http1 import RequestHead
from coder_migrate.proxy.wsframes import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    FrameError,
    FrameReader,
    close_payload,
    frame_header,
)

__all__ = ["CLOSE_TIMEOUT_SECONDS", "READ_SIZE", "WebSocketTunnel", "handshake"]

CLOSE_TIMEOUT_SECONDS = 10.0
NORMAL_CLOSURE, GOING_AWAY = 1000, 1001
READ_SIZE = 256 << 10  # bytes per read, as uvloop's own reads: what one frame to the client holds
_ROOM = 10  # before the read: the longest header of a server frame goes there
_SHARED = bytearray(_ROOM + READ_SIZE)
_FRAME = memoryview(_SHARED)
_READ_INTO = _FRAME[_ROOM:]


def handshake(head: RequestHead) -> Response:
    """Check a websocket upgrade request: the response is the 101 to send, or a refusal.

    No extension or subprotocol is offered, so the frames that follow a 101 are plain.
    """
    headers = Headers()
    for name, value in head.headers:
        headers[name.decode("latin-1")] = value.decode("latin-1")
    # The path without its query: the signed token stays out of anything the library keeps.
    request = Request(head.path, headers, method=head.method, protocol=f"HTTP/{head.version}")
    return ServerProtocol().accept(request)


def _binary_frame(length: int) -> bytes:
    """The agent's ``length`` bytes read into the shared buffer, as one binary frame."""
    if length < 126:
        start = _ROOM - 2
        _SHARED[start] = 0x82
        _SHARED[start + 1] = length
    elif length < 1 << 16:
        start = _ROOM - 4
        _SHARED[start:_ROOM] = b"\x82\x7e" + length.to_bytes(2, "big")
    else:
        start = 0
        _SHARED[0:_ROOM] = b"\x82\x7f" + length.to_bytes(8, "big")
    return bytes(_FRAME[start : _ROOM + length])


class _AgentSide:
    """The TCP connection to the agent's port: a buffered asyncio protocol by its methods
    (no base class, so mypyc compiles it natively and uvloop sees ``get_buffer``)."""

    def __init__(self, tunnel: WebSocketTunnel) -> None:
        self.tunnel = tunnel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.tunnel.agent = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_INTO

    def buffer_updated(self, nbytes: int) -> None:
        self.tunnel.from_agent_buffer(nbytes)

    def data_received(self, data: bytes) -> None:
        self.tunnel.from_agent(data)

    def eof_received(self) -> bool | None:
        self.tunnel.agent_finished()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.agent_finished()

    def pause_writing(self) -> None:
        client = self.tunnel.client
        if client is not None:
            client.pause_reading()

    def resume_writing(self) -> None:
        client = self.tunnel.client
        if client is not None and not client.is_closing():
            client.resume_reading()


class WebSocketTunnel:
    """The client side: after the handshake, the client transport's protocol (a buffered
    one by its methods, like :class:`_AgentSide`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_close: Callable[[int, int], None],
        *,
        ping_interval: float = 30.0,
        frame_timeout: float = 30.0,
    ) -> None:
        self.loop = loop
        self.on_close = on_close
        self.reader = FrameReader(self)
        self.agent_side = _AgentSide(self)
        self.client: asyncio.Transport | None = None
        self.agent: asyncio.Transport | None = None
        self.to_agent = 0
        self.to_client = 0
        self.open = False  # frames flow; False once a close frame was sent or received
        self.closed = False
        self.ping_interval = ping_interval
        self.frame_timeout = frame_timeout
        self.last_activity = loop.time()
        self.ping_sent = 0.0
        self.partial_since = 0.0
        self._close_timer: asyncio.TimerHandle | None = None

    def start(self, client: asyncio.Transport, response: Response, leftover: bytes) -> None:
        """Send the 101, take over the client transport and relay (``leftover``: frames the
        client sent before it had the answer)."""
        self.client = client
        self.open = True
        client.set_protocol(cast(asyncio.BaseProtocol, self))
        client.write(response.serialize())
        if leftover:
            self.data_received(leftover)
        if not self.closed:
            client.resume_reading()

    # -- client side (asyncio.BufferedProtocol) ----------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_INTO

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_READ_INTO[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        now = self.last_activity = self.loop.time()
        try:
            self.reader.feed(data)
        except FrameError as error:
            self._fail(error.code, str(error))
            return
        if self.reader.partial:
            if not self.partial_since:
                self.partial_since = now
        else:
            self.partial_since = 0.0

    def on_payload(self, data: bytes) -> None:
        if self.agent is not None and self.open:
            self.to_agent += len(data)
            self.agent.write(data)

    def on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._send(frame_header(OP_PONG, len(payload)) + payload)
        elif opcode == OP_PONG:
            self.ping_sent = 0.0
        elif opcode == OP_CLOSE:
            if len(payload) == 1:
                self._fail(1002, "close frame with a one-byte payload")
                return
            if self.open:  # the client closes: answer, then end the TCP connection
                self.open = False
                code = payload[:2] if payload else b""
                self._send(frame_header(OP_CLOSE, len(code)) + code)
            if self.client is not None:
                self.client.close()
            if self.agent is not None:
                self.agent.close()

    def eof_received(self) -> bool | None:
        return None  # the client went away without a close frame: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def pause_writing(self) -> None:
        if self.agent is not None:
            self.agent.pause_reading()

    def resume_writing(self) -> None:
        if self.agent is not None and not self.agent.is_closing():
            self.agent.resume_reading()

    # -- agent side --------------------------------------------------------------------

    def from_agent_buffer(self, length: int) -> None:
        if not self.open or self.client is None:
            return  # closing: the client no longer reads
        self.last_activity = self.loop.time()
        self.to_client += length
        self.client.write(_binary_frame(length))

    def from_agent(self, data: bytes) -> None:
        """The agent's bytes on a loop without buffered protocols."""
        if not self.open or self.client is None:
            return
        self.last_activity = self.loop.time()
        self.to_client += len(data)
        self.client.writelines((frame_header(OP_BINARY, len(data)), data))

    def agent_finished(self) -> None:
        """The agent closed its side: end the websocket with a normal close."""
        self._send_close(NORMAL_CLOSURE)
        if self.agent is not None:
            self.agent.close()

    # -- keep-alive and deadlines ------------------------------------------------------

    def tick(self, now: float) -> None:
        """Called by the sweep: frame deadline, then ping, then give up on a silent peer."""
        if self.closed:
            return
        if self.partial_since and now - self.partial_since > self.frame_timeout:
            self._fail(1008, "frame not completed in time")
            return
        if self.ping_sent:
            if now - self.ping_sent > self.ping_interval:
                self._abort()  # no pong: the peer is gone
            return
        if self.open and now - self.last_activity > self.ping_interval:
            self.ping_sent = now
            payload = os.urandom(4)
            self._send(frame_header(OP_PING, len(payload)) + payload)

    # -- ending ------------------------------------------------------------------------

    def close(self) -> None:
        """Shutting down: tell the client we go away (it has a moment to answer), or cut
        the connection if the close handshake is already under way."""
        if self.open:
            self._send_close(GOING_AWAY)
        else:
            self._abort()
        if self.agent is not None:
            self.agent.close()

    def _fail(self, code: int, reason: str) -> None:
        # A protocol error: close with the RFC's code; a server then ends the connection.
        self._send_close(code, reason)
        if self.client is not None:
            self.client.close()
        if self.agent is not None:
            self.agent.close()

    def _send(self, data: bytes) -> None:
        if self.client is not None and not self.client.is_closing():
            self.client.write(data)

    def _send_close(self, code: int, reason: str = "") -> None:
        if self.closed or self.client is None or not self.open:
            return
        self.open = False
        payload = close_payload(code, reason)
        self._send(frame_header(OP_CLOSE, len(payload)) + payload)
        if self._close_timer is None:
            # The client should answer the close frame; a silent one is cut off.
            self._close_timer = self.loop.call_later(CLOSE_TIMEOUT_SECONDS, self._abort)

    def _abort(self) -> None:
        if self.client is not None:
            self.client.abort()

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self.agent is not None:
            self.agent.close()
        self.reader = FrameReader(_NO_SINK)  # drop the sink's cycle
        self.on_close(self.to_agent, self.to_client)


class _NoSink:
    def on_payload(self, data: bytes) -> None:
        pass

    def on_control(self, opcode: int, payload: bytes) -> None:
        pass


_NO_SINK = _NoSink()
