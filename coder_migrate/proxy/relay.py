"""Byte relay for upgraded connections on plain TCP (websockets, the terminal).

After ``101 Switching Protocols`` the bytes pass through unchanged, so the relay owns both
sockets and moves bytes between them with ``readv``/``write``, driven by the event loop,
as nginx's stream proxy does: each read goes into one buffer shared by every relay of the
process (:data:`READ_SIZE` bytes; a read is written out before the loop reads again) and is
written to the other socket at once. Only what the other socket did not take is kept, in
the direction's own buffer counted in the server's :class:`~.admission.BufferBudget`, and
that direction stops reading until it is written. So an idle connection holds no buffer,
and a busy one at most one read.

Copying, not ``splice(2)``: on loopback a spliced relay measured 0.7-0.9x nginx stream
against 0.95-1.15x for this copy; it used less CPU itself but its receiver more, most
likely because it handed on the sender's pages one 4 KiB fragment each (docs/benchmarks.md).
TLS connections are relayed by the two transports instead (see :mod:`.upgrades`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable

from coder_migrate.proxy.admission import BufferBudget

__all__ = ["READ_SIZE", "SocketRelay"]

READ_SIZE = 1 << 20  # as the fair nginx stream setting, proxy_buffer_size 1m
# A read that filled the buffer left more behind: read again, a few times at most so one
# busy relay does not hold up the other connections.
_READS_PER_WAKEUP = 4
_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK)
_shared: memoryview | None = None  # the read buffer, made on the first read of the process


def _read_buffer() -> memoryview:
    global _shared
    if _shared is None:
        _shared = memoryview(bytearray(READ_SIZE))
    return _shared


class _Direction:
    __slots__ = ("dst", "held", "reading", "src", "total")

    def __init__(self, src: int, dst: int) -> None:
        self.src = src
        self.dst = dst
        self.held = memoryview(b"")  # read, not yet taken by dst; src waits until it is
        self.total = 0
        self.reading = True


class SocketRelay:
    """Moves bytes both ways between two connected sockets (file descriptors it owns)."""

    __slots__ = (
        "_budget", "_done", "_down", "_loop", "_on_close", "_up", "closed", "last_activity",
    )  # fmt: skip

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client_fd: int,
        upstream_fd: int,
        budget: BufferBudget,
        on_close: Callable[[int, int], None],
    ) -> None:
        self._loop = loop
        self._up = _Direction(client_fd, upstream_fd)
        self._down = _Direction(upstream_fd, client_fd)
        self._budget = budget
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
        self._budget.forget(self._up)
        self._budget.forget(self._down)
        for direction in (self._up, self._down):
            self._loop.remove_reader(direction.src)
            self._loop.remove_writer(direction.dst)
            if direction.held:
                self._budget.give(len(direction.held))
                direction.held = memoryview(b"")
        for fd in (self._up.src, self._down.src):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._on_close(self._up.total, self._down.total)

    def _readable(self, direction: _Direction) -> None:
        self.last_activity = self._loop.time()
        if self._budget.exhausted:
            # Other connections hold the budget: read again once it has room.
            self._stop_reading(direction)
            self._budget.wait(direction, lambda: self._resume(direction))
            return
        buffer = _read_buffer()
        for _ in range(_READS_PER_WAKEUP):
            try:
                moved = os.readv(direction.src, [buffer])
            except OSError as error:
                if error.errno not in _RETRY:
                    self.close()
                return
            if moved == 0:
                self._stop_reading(direction)  # for good: nothing resumes a finished side
                self._half_close(direction)
                return
            direction.total += moved
            try:
                written = os.write(direction.dst, buffer[:moved])
            except OSError as error:
                if error.errno not in _RETRY:
                    self.close()
                    return
                written = 0
            if written < moved:
                # Backpressure: keep the rest, read no more until the other side took it.
                direction.held = memoryview(bytes(buffer[written:moved]))
                self._budget.take(moved - written)
                self._stop_reading(direction)
                self._loop.add_writer(direction.dst, self._writable, direction)
                return
            if moved < READ_SIZE:
                return

    def _writable(self, direction: _Direction) -> None:
        self.last_activity = self._loop.time()  # bytes still move: not idle
        held = direction.held
        try:
            written = os.write(direction.dst, held)
        except OSError as error:
            if error.errno not in _RETRY:
                self.close()
            return
        direction.held = held[written:]
        self._budget.give(written)
        if direction.held:
            return
        self._loop.remove_writer(direction.dst)
        self._resume(direction)

    def _stop_reading(self, direction: _Direction) -> None:
        if direction.reading:
            direction.reading = False
            self._loop.remove_reader(direction.src)

    def _resume(self, direction: _Direction) -> None:
        if not direction.reading and not self.closed:
            direction.reading = True
            self._loop.add_reader(direction.src, self._readable, direction)

    def _half_close(self, direction: _Direction) -> None:
        try:
            with socket.socket(fileno=os.dup(direction.dst)) as sock:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._done += 1
        if self._done >= 2 and not self.closed:
            self.close()
