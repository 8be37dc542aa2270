"""Websocket frames read in pieces (RFC 6455 §5), sans-IO.

:class:`FrameReader` never holds a data frame: each payload piece is unmasked and handed on
as soon as it arrives, so a client announcing a 16 MiB frame pins at most one read of
memory. Only a frame's header (≤ 14 bytes) and a control frame's payload (≤ 125 bytes) are
buffered. Unmasking is ``websockets``' C speedup when it is built, its Python version
otherwise; it reads the caller's buffer through a memoryview, so the only copy of a payload
is the unmasked one handed on. No extension is negotiated, so reserved bits are errors.
"""

from __future__ import annotations

import codecs
import struct
from typing import Protocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the pure-Python build of websockets
    from websockets.utils import apply_mask

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameError",
    "FrameReader",
    "FrameSink",
    "close_payload",
    "frame_header",
]

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_DATA_OPCODES = (OP_CONT, OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007


class FrameError(Exception):
    """The client broke the protocol; ``code`` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class FrameSink(Protocol):
    def on_payload(self, data: bytes) -> None:
        """A piece of a data frame's payload, unmasked."""

    def on_control(self, opcode: int, payload: bytes) -> None:
        """A complete ping, pong or close frame."""


def frame_header(opcode: int, length: int, *, fin: bool = True) -> bytes:
    """The header of an unmasked (server) frame."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return struct.pack("!BB", first, length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()[:120]


class FrameReader:
    """Parses masked client frames from a byte stream, payloads streamed to a sink."""

    __slots__ = (
        "_control",
        "_fin",
        "_fragmented",
        "_header",
        "_mask",
        "_offset",
        "_opcode",
        "_remaining",
        "_sink",
        "_text",
    )

    def __init__(self, sink: FrameSink) -> None:
        self._sink = sink
        self._header = b""
        self._remaining = -1  # payload bytes left in the current frame; -1 between frames
        self._mask = b""
        self._offset = 0
        self._opcode = 0
        self._fin = True
        self._control = b""
        self._fragmented = False  # inside a message of several frames
        self._text: codecs.BufferedIncrementalDecoder | None = None

    @property
    def partial(self) -> bool:
        """Buffered bytes of an incomplete header or control frame (the frame deadline)."""
        return (
            bool(self._header)
            or bool(self._control)
            or (self._remaining > 0 and self._opcode in _CONTROL_OPCODES)
        )

    def feed(self, data: bytes | memoryview) -> None:
        """Parse ``data``; raises :class:`FrameError` on a protocol violation.

        ``data`` may be a view of a buffer the caller reuses: nothing of it is kept.
        """
        view = memoryview(data)  # slices of a view copy nothing
        position, size = 0, len(view)
        while position < size:
            if self._remaining < 0:
                position = self._read_header(view, position)
                continue
            step = min(self._remaining, size - position)
            if step:
                self._payload(view[position : position + step] if step < size else view)
                position += step
                self._remaining -= step
            if self._remaining == 0:
                self._end_frame()

    def _read_header(self, view: memoryview, position: int) -> int:
        header = self._header + bytes(view[position : position + 14 - len(self._header)])
        if len(header) < 2:
            self._header = header
            return len(view)
        first, second = header[0], header[1]
        if first & 0x70:
            raise FrameError(PROTOCOL_ERROR, "reserved bits set")
        if not second & 0x80:
            raise FrameError(PROTOCOL_ERROR, "client frames must be masked")
        length = second & 0x7F
        needed = 2 + (2 if length == 126 else 8 if length == 127 else 0) + 4
        if len(header) < needed:
            self._header = header
            return len(view)
        used = needed - len(self._header)
        self._header = b""
        if length == 126:
            length = struct.unpack("!H", header[2:4])[0]
        elif length == 127:
            length = struct.unpack("!Q", header[2:10])[0]
            if length >> 63:
                raise FrameError(PROTOCOL_ERROR, "frame length out of range")
        self._start_frame(first & 0x0F, bool(first & 0x80), length, header[needed - 4 : needed])
        if length == 0:
            self._end_frame()
        return position + used

    def _start_frame(self, opcode: int, fin: bool, length: int, mask: bytes) -> None:
        if opcode in _CONTROL_OPCODES:
            if not fin or length > 125:
                raise FrameError(PROTOCOL_ERROR, "fragmented or long control frame")
        elif opcode == OP_CONT:
            if not self._fragmented:
                raise FrameError(PROTOCOL_ERROR, "continuation without a message")
        elif opcode in _DATA_OPCODES:
            if self._fragmented:
                raise FrameError(PROTOCOL_ERROR, "new message inside a fragmented one")
            self._text = codecs.getincrementaldecoder("utf-8")() if opcode == OP_TEXT else None
        else:
            raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        self._opcode, self._fin, self._remaining = opcode, fin, length
        self._mask, self._offset = mask, 0

    def _payload(self, masked: memoryview) -> None:
        offset = self._offset % 4
        mask = self._mask[offset:] + self._mask[:offset] if offset else self._mask
        self._offset += len(masked)
        data = apply_mask(masked, mask)
        if self._opcode in _CONTROL_OPCODES:
            self._control += data
            return
        if self._text is not None:
            try:
                self._text.decode(data)
            except UnicodeDecodeError:
                raise FrameError(INVALID_DATA, "invalid UTF-8 in a text message") from None
        self._sink.on_payload(data)

    def _end_frame(self) -> None:
        self._remaining = -1
        opcode = self._opcode
        if opcode in _CONTROL_OPCODES:
            payload, self._control = self._control, b""
            self._sink.on_control(opcode, payload)
            return
        self._fragmented = not self._fin
        if self._fin and self._text is not None:
            try:
                self._text.decode(b"", final=True)
            except UnicodeDecodeError:
                raise FrameError(INVALID_DATA, "invalid UTF-8 in a text message") from None
            self._text = None
