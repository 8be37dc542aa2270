"""TCP over websocket: a client's websocket carries the bytes of a TCP connection to an agent.

Unlike the other upgraded routes, the proxy ends this websocket itself: the ``websockets``
package's sans-I/O :class:`~websockets.server.ServerProtocol` does the handshake and the
framing (unmasking, fragments, ping/pong, the close handshake, protocol errors). The payload
of every data frame goes to the agent's TCP port; what the agent sends comes back in binary
frames. A transport that reports ``pause_writing`` stops reading on the other side, so
neither direction buffers more than a transport's high-water mark plus one frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from websockets.datastructures import Headers
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from coder_migrate.proxy.http1 import RequestHead

__all__ = ["MAX_FRAME_BYTES", "WebSocketTunnel", "handshake"]

# A frame is held whole before it is relayed; messages as such have no limit (a byte stream).
MAX_FRAME_BYTES = 16 << 20
CLOSE_TIMEOUT_SECONDS = 10.0
_DATA = frozenset({Opcode.BINARY, Opcode.TEXT, Opcode.CONT})


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


class _AgentSide(asyncio.Protocol):
    """The TCP connection to the agent's port."""

    __slots__ = ("tunnel",)

    def __init__(self, tunnel: WebSocketTunnel) -> None:
        self.tunnel = tunnel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.tunnel.agent = cast(asyncio.Transport, transport)

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


class WebSocketTunnel(asyncio.Protocol):
    """The client side: after the handshake, the client transport's protocol."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_close: Callable[[int, int], None]
    ) -> None:
        # The handshake was read by the proxy's own parser: this one starts with frames.
        self.websocket = ServerProtocol(state=State.OPEN, max_size=(None, MAX_FRAME_BYTES))
        self.loop = loop
        self.on_close = on_close
        self.agent_side = _AgentSide(self)
        self.client: asyncio.Transport | None = None
        self.agent: asyncio.Transport | None = None
        self.to_agent = 0
        self.to_client = 0
        self.closed = False
        self._close_timer: asyncio.TimerHandle | None = None

    def start(self, client: asyncio.Transport, response: Response, leftover: bytes) -> None:
        """Send the 101, take over the client transport and relay (``leftover``: frames the
        client sent before it had the answer)."""
        self.client = client
        client.set_protocol(self)
        client.write(response.serialize())
        if leftover:
            self.data_received(leftover)
        if not self.closed:
            client.resume_reading()

    # -- client side (asyncio.Protocol) ------------------------------------------------

    def data_received(self, data: bytes) -> None:
        websocket = self.websocket
        websocket.receive_data(data)
        agent = self.agent
        for event in websocket.events_received():
            # After the handshake the events are frames (the union also covers handshakes).
            frame = cast(Frame, event)
            if frame.opcode in _DATA and frame.data and agent is not None:
                self.to_agent += len(frame.data)
                agent.write(frame.data)
        self._flush()

    def eof_received(self) -> bool | None:
        self.websocket.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def pause_writing(self) -> None:
        if self.agent is not None:
            self.agent.pause_reading()

    def resume_writing(self) -> None:
        if self.agent is not None and not self.agent.is_closing():
            self.agent.resume_reading()

    # -- agent side --------------------------------------------------------------------

    def from_agent(self, data: bytes) -> None:
        websocket = self.websocket
        if websocket.state is not State.OPEN:
            return  # closing: the client no longer reads
        self.to_client += len(data)
        websocket.send_binary(data)
        self._flush()

    def agent_finished(self) -> None:
        """The agent closed its side: end the websocket with a normal close."""
        self._send_close(CloseCode.NORMAL_CLOSURE)
        if self.agent is not None:
            self.agent.close()

    # -- ending ------------------------------------------------------------------------

    def close(self) -> None:
        """Shutting down: tell the client we go away (it has a moment to answer), or cut
        the connection if the close handshake is already under way."""
        if self.websocket.state is State.OPEN:
            self._send_close(CloseCode.GOING_AWAY)
        else:
            self._abort()
        if self.agent is not None:
            self.agent.close()

    def _send_close(self, code: CloseCode) -> None:
        if self.closed or self.client is None or self.websocket.state is not State.OPEN:
            return
        self.websocket.send_close(code)
        self._flush()
        if self._close_timer is None and not self.closed:
            # The client should answer the close frame; a silent one is cut off.
            self._close_timer = self.loop.call_later(CLOSE_TIMEOUT_SECONDS, self._abort)

    def _flush(self) -> None:
        client = self.client
        if client is None:
            return
        for data in self.websocket.data_to_send():
            if data:
                client.write(data)
            else:
                # The websocket is closed (handshake done, or failed on a protocol error):
                # a server ends the TCP connection, after what is buffered has been sent.
                client.close()
                if self.agent is not None:
                    self.agent.close()

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
        self.on_close(self.to_agent, self.to_client)
