"""Byte relays for upgraded connections (websockets, TCP over websocket, the terminal).

After ``101 Switching Protocols`` the bytes pass through unchanged, so on plain TCP both
directions are moved by ``splice(2)`` through a pipe, driven by the event loop: the data
never enters Python. Pipes are created on the first byte, so an idle connection costs two
file descriptors and one small object. TLS connections use :class:`ProtocolRelay`, which
moves bytes between the two transports with backpressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable

__all__ = ["SPLICE_CHUNK", "SpliceRelay", "splice_supported"]

SPLICE_CHUNK = 1 << 20
_PIPE_SIZE = 1 << 20
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = 1031
_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK)


def splice_supported() -> bool:
    return hasattr(os, "splice")


class _Direction:
    __slots__ = ("dst", "eof", "pending", "pipe_r", "pipe_w", "src", "total", "waiting_write")

    def __init__(self, src: int, dst: int) -> None:
        self.src = src
        self.dst = dst
        self.pipe_r = -1
        self.pipe_w = -1
        self.pending = 0
        self.total = 0
        self.eof = False
        self.waiting_write = False


class SpliceRelay:
    """Moves bytes both ways between two connected sockets (file descriptors it owns)."""

    __slots__ = ("_done", "_down", "_loop", "_on_close", "_up", "closed", "last_activity")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client_fd: int,
        upstream_fd: int,
        on_close: Callable[[int, int], None],
    ) -> None:
        self._loop = loop
        self._up = _Direction(client_fd, upstream_fd)
        self._down = _Direction(upstream_fd, client_fd)
        self._on_close = on_close
        self._done = 0
        self.closed = False
        self.last_activity = loop.time()  # for the idle timeout the server's sweep applies

    def start(self) -> None:
        self._loop.add_reader(self._up.src, self._readable, self._up)
        self._loop.add_reader(self._down.src, self._readable, self._down)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for direction in (self._up, self._down):
            self._loop.remove_reader(direction.src)
            self._loop.remove_writer(direction.dst)
            for fd in (direction.pipe_r, direction.pipe_w):
                if fd >= 0:
                    os.close(fd)
        for fd in (self._up.src, self._down.src):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._on_close(self._up.total, self._down.total)

    def _readable(self, direction: _Direction) -> None:
        self.last_activity = self._loop.time()
        if direction.pipe_r < 0:
            direction.pipe_r, direction.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                import fcntl

                fcntl.fcntl(direction.pipe_w, _F_SETPIPE_SZ, _PIPE_SIZE)
            except OSError:
                pass  # a smaller pipe only costs more calls
        try:
            moved = os.splice(direction.src, direction.pipe_w, SPLICE_CHUNK, flags=_FLAGS)
        except OSError as error:
            if error.errno in _RETRY:
                return
            self.close()
            return
        if moved == 0:
            self._loop.remove_reader(direction.src)
            direction.eof = True
            if direction.pending == 0:
                self._half_close(direction)
            return
        direction.pending += moved
        direction.total += moved
        self._flush(direction)

    def _flush(self, direction: _Direction) -> None:
        while direction.pending:
            try:
                moved = os.splice(direction.pipe_r, direction.dst, direction.pending, flags=_FLAGS)
            except OSError as error:
                if error.errno in _RETRY:
                    if not direction.waiting_write:
                        direction.waiting_write = True
                        # Backpressure: stop reading until the other side takes the bytes.
                        self._loop.remove_reader(direction.src)
                        self._loop.add_writer(direction.dst, self._writable, direction)
                    return
                self.close()
                return
            direction.pending -= moved
        if direction.waiting_write:
            direction.waiting_write = False
            self._loop.remove_writer(direction.dst)
            if not direction.eof and not self.closed:
                self._loop.add_reader(direction.src, self._readable, direction)
        if direction.eof:
            self._half_close(direction)

    def _writable(self, direction: _Direction) -> None:
        self._flush(direction)

    def _half_close(self, direction: _Direction) -> None:
        try:
            with socket.socket(fileno=os.dup(direction.dst)) as sock:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._done += 1
        if self._done >= 2 and not self.closed:
            self.close()
