"""One request/response exchange, sans-IO: heads built and rewritten, response bodies framed.

Everything here is a pure function of bytes or a small state object; nothing touches a
socket, so the unit tests drive it with byte strings (as h11's and mitmproxy's sans-IO
layers are tested). The IO classes (:mod:`.client`, :mod:`.upstream`) only move bytes
between these pieces and the transports.

- :func:`upstream_request_head`: the request head an upstream receives (hop-by-hop and
  ``Connection``-named headers removed, Coder's credentials stripped, ``X-Forwarded-*`` set
  by the proxy, never appended to what the client sent).
- :func:`client_response_head`: an upstream's response head as the client receives it.
- :class:`ResponseReader`: finds response heads and where each body ends in raw upstream
  bytes (``Content-Length`` arithmetic, a chunk scanner, or the connection's close).
- :class:`Exchange`: what the proxy knows about the exchange in flight, with a named
  :class:`Phase` rather than sentinel numbers.
"""

from __future__ import annotations

import enum
import time
from typing import Final

from coder_migrate.proxy.http1 import HOP_BY_HOP, RequestHead, ResponseHead
from coder_migrate.proxy.responses import Target

__all__ = [
    "ANSWERED",
    "BODY_FOLLOWS",
    "BY_LENGTH",
    "CHUNKED",
    "COMPLETE",
    "CONNECTING",
    "INTERIM",
    "NO_BODY",
    "READING_BODY",
    "READING_HEAD",
    "READ_DONE",
    "READ_UPGRADED",
    "ROUTING",
    "STREAMING",
    "SWITCHED",
    "UNTIL_CLOSE",
    "UPGRADED",
    "UPSTREAM_HEAD_LIMIT",
    "WAITING",
    "BodyFraming",
    "ChunkScanner",
    "Exchange",
    "Phase",
    "ReaderState",
    "ResponseError",
    "ResponseReader",
    "ResponseStart",
    "client_response_head",
    "strip_coder_cookies",
    "upstream_request_head",
]

UPSTREAM_HEAD_LIMIT: Final = 64 * 1024
_CHUNK_LINE_LIMIT: Final = 4096
_FORWARDED: Final = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}
)
_REQUEST_DROPPED: Final = HOP_BY_HOP | _FORWARDED
# Session headers of Coder v2 and v1: an app must never see them.
_SESSION_HEADERS: Final = frozenset({b"coder-session-token", b"session-token"})


def strip_coder_cookies(value: bytes) -> bytes:
    """Drop Coder's session and app-token cookies (v2 ``coder_*``, v1 ``session_token``)."""
    if value.find(b"coder_") < 0 and value.find(b"session_token") < 0:  # find: see on_header
        return value
    kept = [
        part.strip()
        for part in value.split(b";")
        if part.strip() and not part.strip().startswith((b"coder_", b"session_token="))
    ]
    return b"; ".join(kept)


_NO_TOKENS: Final[frozenset[bytes]] = frozenset()


def _connection_tokens(head: RequestHead) -> frozenset[bytes]:
    if head.connection is None:
        return _NO_TOKENS
    return frozenset(t.strip().lower() for t in head.connection.split(b",") if t.strip())


# What upstream_request_head does with a header, by name (see _name_kind).
_PASS: Final = 0
_DROP: Final = 1
_HOST: Final = 2
_COOKIE: Final = 3
_SESSION: Final = 4
_UPGRADE: Final = 5
# Header names as sent (any case) -> their kind: clients repeat the same few names, and one
# lookup by bytes is cheaper than the length check, lowercasing and set lookups it replaces.
_NAME_KINDS: Final[dict[bytes, int]] = {}
_NAME_KINDS_SIZE: Final = 1024


def _name_kind(name: bytes) -> int:
    kind = _NAME_KINDS.get(name)
    if kind is not None:
        return kind
    lowered = name.lower()
    if lowered == b"upgrade":
        kind = _UPGRADE
    elif lowered in _REQUEST_DROPPED:
        kind = _DROP
    elif lowered == b"host":
        kind = _HOST
    elif lowered == b"cookie":
        kind = _COOKIE
    elif lowered in _SESSION_HEADERS:
        kind = _SESSION
    else:
        kind = _PASS
    if len(_NAME_KINDS) >= _NAME_KINDS_SIZE:
        _NAME_KINDS.clear()  # bounded: a client sending ever new names only fills it again
    _NAME_KINDS[name] = kind
    return kind


def upstream_request_head(
    head: RequestHead, path: bytes, forwarded: bytes, strip_credentials: bool
) -> bytes:
    """The head sent upstream for ``head`` with request target ``path``.

    ``forwarded`` is ``\\r\\nX-Forwarded-For: ...\\r\\nX-Forwarded-Proto: ...`` for this
    client. HTTP/1.0 requests get ``Connection: close``; chunked bodies stay chunked.
    """
    tokens = _connection_tokens(head)
    parts = [head.method.encode(), b" ", path, b" HTTP/1.1\r\n"]
    upgrade_value = host_value = b""
    for name, value in head.headers:
        kind = _name_kind(name)
        if tokens and name.lower() in tokens:
            if kind == _UPGRADE:
                upgrade_value = value
            continue
        if kind != _PASS:
            if kind == _UPGRADE:
                upgrade_value = value
                continue
            if kind == _DROP:
                continue
            if kind == _HOST:
                host_value = value
                continue
            if strip_credentials:
                if kind == _SESSION:
                    continue
                value = strip_coder_cookies(value)
                if not value:
                    continue
        # Appends, not "+=" of a tuple: a plain list append compiles to one C call.
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(b"\r\n")
    parts.append(b"Host: ")
    parts.append(host_value)
    parts.append(forwarded)
    if host_value:
        parts.append(b"\r\nX-Forwarded-Host: ")
        parts.append(host_value)
    if head.upgrade and upgrade_value:
        parts.append(b"\r\nConnection: Upgrade\r\nUpgrade: ")
        parts.append(upgrade_value)
    elif head.version == "1.0":
        parts.append(b"\r\nConnection: close")
    if head.chunked:
        parts.append(b"\r\nTransfer-Encoding: chunked")
    parts.append(b"\r\n\r\n")
    return b"".join(parts)


def client_response_head(
    parsed: ResponseHead, raw: bytes, keep_alive: bool, set_cookie: bytes = b""
) -> bytes:
    """The response head the client receives: hop-by-hop lines dropped, ``Connection``
    stated when the connection ends (or upgrades), the proxy's cookie added."""
    if parsed.status == 101:
        extra = [b"Connection: Upgrade"]
        if parsed.upgrade_line:
            extra.append(parsed.upgrade_line)
        return parsed.rebuild(raw, extra)
    extra = [] if keep_alive else [b"Connection: close"]
    if set_cookie:
        extra.append(b"Set-Cookie: " + set_cookie)
    return parsed.rebuild(raw, extra)


# ChunkScanner states.
_SIZE_LINE, _DATA, _DATA_END, _TRAILER, _FINISHED = range(5)


class ChunkScanner:
    """Finds the end of a chunked body in raw bytes without copying them."""

    __slots__ = ("_line", "_remaining", "_state", "sized")

    def __init__(self) -> None:
        self._state = _SIZE_LINE
        self._remaining = 0
        self._line = b""
        self.sized = False  # the first chunk-size line has been read and was valid

    def feed(self, data: bytes, start: int = 0) -> int:
        """Scan ``data[start:]``; the index just after the body's end, or -1.
        ``ValueError`` when the framing is broken (a 502 for the client)."""
        position = start
        size = len(data)
        while position < size:
            if self._state == _DATA:
                step = min(self._remaining, size - position)
                position += step
                self._remaining -= step
                if self._remaining == 0:
                    self._state = _DATA_END
                continue
            end = data.find(b"\n", position)
            if end < 0:
                self._line += data[position:]
                if len(self._line) > _CHUNK_LINE_LIMIT:
                    raise ValueError("chunk line too long")
                return -1
            line = (self._line + data[position:end]).rstrip(b"\r")
            self._line = b""
            if len(line) > _CHUNK_LINE_LIMIT:
                raise ValueError("chunk line too long")
            position = end + 1
            if self._line_done(line):
                return position
        return -1

    def _line_done(self, line: bytes) -> bool:
        state = self._state
        if state == _SIZE_LINE:
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16:
                raise ValueError("invalid chunk size")
            try:
                chunk = int(size_text, 16)
            except ValueError:
                raise ValueError("invalid chunk size") from None
            if chunk < 0:
                raise ValueError("invalid chunk size")
            self.sized = True
            self._remaining = chunk
            self._state = _DATA if chunk else _TRAILER
        elif state == _DATA_END:
            if line:
                raise ValueError("missing CRLF after chunk")
            self._state = _SIZE_LINE
        elif state == _TRAILER and not line:
            self._state = _FINISHED
            return True
        return False


class ResponseError(Exception):
    """The upstream's answer cannot be relayed; the client gets a 502 if it can."""


class BodyFraming(enum.Enum):
    NONE = "none"
    LENGTH = "content-length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"


class ReaderState(enum.Enum):
    HEAD = "head"  # waiting for (the rest of) a response head
    BODY = "body"  # relaying a body
    DONE = "done"  # the response is complete
    UPGRADED = "upgraded"  # after 101: bytes are no longer HTTP


class ResponseStart(enum.Enum):
    INTERIM = "interim"  # a 1xx other than 101: pass on, the real head follows
    SWITCHED = "switched"  # 101 to an upgrade request
    BODY = "body"  # a body follows
    COMPLETE = "complete"  # no body


class ResponseReader:
    """Splits an upstream's bytes into response heads and body ends (sans-IO)."""

    __slots__ = ("chunks", "framing", "pending", "remaining", "reusable", "state")

    def __init__(self) -> None:
        self.reusable = True
        self.reset()

    def reset(self) -> None:
        self.state = READING_HEAD
        self.framing = NO_BODY
        self.remaining = 0
        self.chunks: ChunkScanner | None = None
        self.pending = b""

    def take_head(self, data: bytes, offset: int) -> tuple[bytes | None, int]:
        """The next complete head in ``pending + data[offset:]`` and the offset after it
        in ``data``; ``(None, len(data))`` when more bytes are needed (kept in pending)."""
        if self.pending:
            joined = self.pending + data[offset:]
            end = joined.find(b"\r\n\r\n")
            if end < 0:
                return self._keep(joined, len(data))
            consumed = end + 4 - len(self.pending)
            self.pending = b""
            return joined[: end + 4], offset + consumed
        end = data.find(b"\r\n\r\n", offset)
        if end < 0:
            return self._keep(data[offset:], len(data))
        return data[offset : end + 4], end + 4

    def _keep(self, partial: bytes, size: int) -> tuple[None, int]:
        if len(partial) > UPSTREAM_HEAD_LIMIT:
            self.reusable = False
            raise ResponseError("response head too large")
        self.pending = partial
        return None, size

    def begin(self, parsed: ResponseHead, *, method: str, upgrade: bool) -> ResponseStart:
        """Decide how the body that follows ``parsed`` is framed."""
        status = parsed.status
        if status < 200 and status != 101:
            return INTERIM
        if status == 101:
            if not upgrade:
                self.reusable = False
                raise ResponseError("101 to a request that asked for no upgrade")
            self.reusable = False
            self.state = READ_UPGRADED
            return SWITCHED
        if parsed.close or upgrade:
            # Refused upgrade: what the upstream sends next is not for another request.
            self.reusable = False
        if method == "HEAD" or status in (204, 304) or parsed.content_length == 0:
            self.state = READ_DONE
            return COMPLETE
        self.state = READING_BODY
        if parsed.chunked:
            self.framing = CHUNKED
            self.chunks = ChunkScanner()
        elif parsed.content_length > 0:
            self.framing = BY_LENGTH
            self.remaining = parsed.content_length
        else:
            self.framing = UNTIL_CLOSE
            self.reusable = False
        return BODY_FOLLOWS

    def body_end(self, data: bytes, offset: int) -> int:
        """How far ``data[offset:]`` belongs to the body; the state becomes DONE at its end."""
        framing = self.framing
        if framing is BY_LENGTH:
            size = len(data) - offset
            if size >= self.remaining:
                if size > self.remaining:
                    self.reusable = False  # more than announced: framing is broken
                size = self.remaining
                self.state = READ_DONE
            self.remaining -= size
            return offset + size
        if framing is CHUNKED:
            assert self.chunks is not None
            try:
                end = self.chunks.feed(data, offset)
            except ValueError as error:
                self.reusable = False
                raise ResponseError(str(error)) from None
            if end < 0:
                return len(data)
            if end < len(data):
                self.reusable = False  # bytes after the last chunk: do not reuse
            self.state = READ_DONE
            return end
        return len(data)

    @property
    def upgraded(self) -> bool:
        return self.state is READ_UPGRADED

    @property
    def holds_head_back(self) -> bool:
        """A chunked body's first size line is not yet known good: keep the client's head
        back, so broken framing can still become a 502."""
        return self.chunks is not None and not self.chunks.sized


class Phase(enum.Enum):
    ROUTING = "routing"  # deciding, or waiting for the primary to authorise
    CONNECTING = "connecting"  # waiting for an upstream connection
    WAITING = "waiting"  # request sent, waiting for the response head
    STREAMING = "streaming"  # response head accepted, body under way
    UPGRADED = "upgraded"  # relaying an upgraded connection or a tunnel
    ANSWERED = "answered"  # the response is complete


# Members bound to module names: reading an Enum member costs about five global reads, and
# these are compared on every request.
READING_HEAD: Final = ReaderState.HEAD
READING_BODY: Final = ReaderState.BODY
READ_DONE: Final = ReaderState.DONE
READ_UPGRADED: Final = ReaderState.UPGRADED
NO_BODY: Final = BodyFraming.NONE
BY_LENGTH: Final = BodyFraming.LENGTH
CHUNKED: Final = BodyFraming.CHUNKED
UNTIL_CLOSE: Final = BodyFraming.UNTIL_CLOSE
INTERIM: Final = ResponseStart.INTERIM
SWITCHED: Final = ResponseStart.SWITCHED
BODY_FOLLOWS: Final = ResponseStart.BODY
COMPLETE: Final = ResponseStart.COMPLETE
ROUTING: Final = Phase.ROUTING
CONNECTING: Final = Phase.CONNECTING
WAITING: Final = Phase.WAITING
STREAMING: Final = Phase.STREAMING
UPGRADED: Final = Phase.UPGRADED
ANSWERED: Final = Phase.ANSWERED


class Exchange:
    """The request in flight on a client connection and how far its answer got.

    Rarely changed fields have class-level defaults, so starting an exchange sets only what
    every request has (this runs once per request).
    """

    target: Target | None = None
    status = 0
    request_done = False
    response_started = False  # bytes of the answer reached the client transport
    held_head = b""  # the answer's head, sent with its first body bytes
    body_buffer: list[bytes] | None = None
    body_buffered = 0
    discard_body = False
    upgrade_leftover = b""  # bytes after an upgrade request, held until a 101
    retried = False
    reused_upstream = False

    def __init__(self, head: RequestHead, *, keep_alive: bool) -> None:
        self.head = head
        self.started = time.perf_counter_ns()  # an int: no float object per request
        self.metric_path = ""
        self.phase = ROUTING
        self.keep_alive = keep_alive and head.version != "1.0"

    @property
    def can_retry(self) -> bool:
        """A pooled connection failed before answering: safe to try once more."""
        head = self.head
        return (
            not self.retried
            and self.reused_upstream
            and not head.has_body
            and not head.upgrade
            and head.method in ("GET", "HEAD", "OPTIONS")
            and self.target is not None
        )

    def refuse_body(self) -> None:
        """The answer comes before the request body was read: the connection ends after it."""
        if self.head.has_body and not self.request_done:
            self.discard_body = True
            self.keep_alive = False
        if self.head.upgrade:
            self.keep_alive = False
