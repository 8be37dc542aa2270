"""HTTP/1.1 request heads: parsing with limits and the smuggling checks (sans-IO).

:class:`RequestParser` wraps httptools (llhttp, strict mode) and adds what a proxy in front
of other servers needs: limits on the request line, header count and head size; exactly one
``Host``; no ``Content-Length`` together with ``Transfer-Encoding``; only ``chunked`` as a
transfer coding; no absolute-form or CONNECT targets (never an open proxy). Bytes go in with
:meth:`RequestParser.feed`; the head, body chunks and the end of each message come out as
calls on a :class:`MessageSink`. No sockets: the fuzz and unit tests drive it directly.
"""

from __future__ import annotations

from typing import Final, Protocol

import httptools

__all__ = [
    "HOP_BY_HOP",
    "HttpReject",
    "MessageSink",
    "RequestHead",
    "RequestParser",
    "ResponseHead",
    "cookie_values",
    "parse_response_head",
]

# RFC 9110 §7.6.1 connection-specific fields, never forwarded as they are.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Lengths of host, connection, content-length, transfer-encoding: only these are looked at.
_FRAMING_NAME_LENGTHS: Final = frozenset({4, 10, 14, 17})
_METHODS: Final = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
}
_HOST_CACHE: Final[dict[bytes, str]] = {}
_HOST_CACHE_SIZE: Final = 4096
# The longest read kept to recognise a repeated request (memory per keep-alive connection).
_REPEAT_LIMIT: Final = 2048


class HttpReject(Exception):
    """The request cannot be served; ``status`` is what the client gets (no detail)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestHead:
    """A parsed, validated request head. ``headers`` keep their order and case."""

    __slots__ = (
        "chunked",
        "connection",
        "content_length",
        "headers",
        "host",
        "keep_alive",
        "method",
        "path",
        "query",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        *,
        host: str,
        content_length: int | None,
        chunked: bool,
        upgrade: bool,
        keep_alive: bool,
        connection: bytes | None = None,
    ) -> None:
        self.method = method
        self.connection = connection
        self.target = target
        path, _, query = target.partition(b"?")
        self.path = path.decode("latin-1")
        self.query = query.decode("latin-1")
        self.version = version
        self.headers = headers
        self.host = host
        self.content_length = content_length
        self.chunked = chunked
        self.upgrade = upgrade
        self.keep_alive = keep_alive

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (``name`` lowercase)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def cookies(self, name: str) -> list[str]:
        """Every value of cookie ``name`` across ``Cookie`` headers, in order."""
        found: list[str] = []
        for key, value in self.headers:
            if key.lower() == b"cookie":
                found.extend(cookie_values(value, name))
        return found


def cookie_values(header: bytes, name: str) -> list[str]:
    wanted = name.encode("latin-1")
    values: list[str] = []
    for part in header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == wanted:
            values.append(value.strip(b'"').decode("latin-1"))
    return values


class MessageSink(Protocol):
    """Receives what :class:`RequestParser` finds; the connection implements it."""

    def on_request_head(self, head: RequestHead) -> None: ...

    def on_request_body(self, chunk: bytes) -> None: ...

    def on_request_end(self) -> None: ...


class RequestParser:
    """Feeds bytes to httptools and turns its callbacks into validated messages.

    After an ``Upgrade`` request, :meth:`feed` returns the bytes that follow the head (they
    belong to the upgraded stream); otherwise it returns ``None``.
    """

    __slots__ = (
        "_begun",
        "_body_bytes",
        "_done_head",
        "_head_bytes",
        "_header_bytes",
        "_headers",
        "_in_head",
        "_in_message",
        "_max_body",
        "_max_head",
        "_max_headers",
        "_max_line",
        "_parser",
        "_repeat_data",
        "_repeat_head",
        "_sink",
        "_url",
    )

    def __init__(
        self,
        sink: MessageSink,
        *,
        max_head_bytes: int = 32 * 1024,
        max_headers: int = 100,
        max_request_line_bytes: int = 8 * 1024,
        max_body_bytes: int = 1 << 30,
    ) -> None:
        self._sink = sink
        self._max_head = max_head_bytes
        self._max_headers = max_headers
        self._max_line = max_request_line_bytes
        self._max_body = max_body_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_head = False
        self._in_message = False
        self._head_bytes = 0
        self._header_bytes = 0
        self._body_bytes = 0
        # The last read that held exactly one whole request without a body, and its head.
        self._repeat_data = b""
        self._repeat_head: RequestHead | None = None
        self._begun = 0  # requests begun in the current read
        self._done_head: RequestHead | None = None  # ... and the last body-less head among them

    @property
    def in_head(self) -> bool:
        """True between the first byte of a request and the end of its head."""
        return self._in_head

    def feed(self, data: bytes) -> bytes | None:
        """Parse ``data``; raises :class:`HttpReject` on anything malformed or too large.

        A read with the same bytes as the last one that held exactly one whole request
        without a body (a keep-alive client repeating itself: polling, retries, load
        generators) is that request again: parsing is a pure function of the bytes when
        the parser is between requests, so its head is handed on again without llhttp.
        """
        at_start = not self._in_message
        if at_start:
            head = self._repeat_head
            if head is not None and data == self._repeat_data:
                self._sink.on_request_head(head)
                self._sink.on_request_end()
                return None
            self._begun = 0
            self._done_head = None
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head + self._max_line:
                raise HttpReject(431, "request head too large")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = int(upgrade.args[0]) if upgrade.args else len(data)
            return data[offset:]
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__ or error.__cause__
            if isinstance(cause, HttpReject):
                raise cause from None
            raise
        except httptools.HttpParserInvalidMethodError:
            raise HttpReject(400, "invalid method") from None
        except httptools.HttpParserError:
            raise HttpReject(400, "malformed request") from None
        if (
            at_start
            and self._begun == 1
            and not self._in_message
            and self._done_head is not None
            and len(data) <= _REPEAT_LIMIT
        ):
            self._repeat_data, self._repeat_head = data, self._done_head
        return None

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._begun += 1
        self._in_message = True
        self._in_head = True
        self._head_bytes = 0
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_line:
            raise HttpReject(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # find, not "in": bytes.__contains__ first tries the operand as an integer and
        # formats a TypeError for every header (about 1,800 instructions each).
        if name.find(b"_") >= 0:
            # Like nginx (underscores_in_headers off): "Transfer_Encoding" and friends are
            # ignored, so no app can read them as the header they resemble.
            return
        headers = self._headers
        if len(headers) >= self._max_headers:
            raise HttpReject(431, "too many headers")
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._max_head:
            raise HttpReject(431, "request head too large")
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii", "replace")
        version = parser.get_http_version()
        head = _validate(method, self._url, version, self._headers, upgrade=parser.should_upgrade())
        head.keep_alive = parser.should_keep_alive()
        if not head.upgrade and not head.has_body:
            self._done_head = head  # may be repeated (feed); heads are never changed later
        self._sink.on_request_head(head)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            raise HttpReject(413, "request body too large")
        self._sink.on_request_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._sink.on_request_end()


def _validate(
    method: str,
    target: bytes,
    version: str,
    headers: list[tuple[bytes, bytes]],
    *,
    upgrade: bool,
) -> RequestHead:
    if method == "CONNECT":
        raise HttpReject(405, "CONNECT is not served")
    if not target.startswith(b"/"):
        # Absolute-form ("GET http://elsewhere/") and authority-form would make an open
        # proxy; "*" (OPTIONS *) is not something a workspace proxy answers.
        raise HttpReject(400, "request target must be a path")
    if version not in ("1.1", "1.0"):
        raise HttpReject(505, "HTTP version not supported")
    host, content_length, chunked, connection = _framing(headers)
    if chunked and content_length is not None:
        raise HttpReject(400, "Content-Length together with Transfer-Encoding")
    if chunked and version == "1.0":
        raise HttpReject(400, "Transfer-Encoding in HTTP/1.0")
    if host is None:
        if version == "1.1":
            raise HttpReject(400, "missing Host header")
        host = b""
    host_text = _HOST_CACHE.get(host)
    if host_text is None:
        host_text = _host_name(host)
        if len(_HOST_CACHE) >= _HOST_CACHE_SIZE:
            _HOST_CACHE.clear()
        _HOST_CACHE[host] = host_text
    return RequestHead(
        method,
        target,
        version,
        headers,
        host=host_text,
        content_length=content_length,
        chunked=chunked,
        upgrade=upgrade,
        keep_alive=True,
        connection=connection,
    )


def _framing(
    headers: list[tuple[bytes, bytes]],
) -> tuple[bytes | None, int | None, bool, bytes | None]:
    """Host, Content-Length, chunked and Connection, each checked for duplicates."""
    host = None
    content_length: int | None = None
    chunked = False
    connection: bytes | None = None
    # llhttp (strict) has already refused bad name tokens and control characters in values.
    for name, value in headers:
        if len(name) not in _FRAMING_NAME_LENGTHS:
            continue
        lowered = name.lower()
        if lowered == b"host":
            if host is not None:
                raise HttpReject(400, "more than one Host header")
            host = value
        elif lowered == b"content-length":
            value = value.strip(b" \t")  # RFC 9110 §5.5: surrounding whitespace is not the value
            if content_length is not None or not value.isdigit() or len(value) > 18:
                raise HttpReject(400, "invalid Content-Length")
            content_length = int(value)
        elif lowered == b"transfer-encoding":
            if chunked or value.strip().lower() != b"chunked":
                raise HttpReject(400, "unsupported Transfer-Encoding")
            chunked = True
        elif lowered == b"connection":
            connection = value if connection is None else connection + b"," + value
    return host, content_length, chunked, connection


def _host_name(host: bytes) -> str:
    """Lowercase host without the port; rejects anything that is not a plain host[:port]."""
    text = host.strip().lower().decode("latin-1")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise HttpReject(400, "invalid Host header")
        name, rest = text[: end + 1], text[end + 1 :]
    else:
        name, _, port = text.partition(":")
        rest = ":" + port if _ else ""
    if rest and (not rest.startswith(":") or not rest[1:].isdigit()):
        raise HttpReject(400, "invalid Host header")
    if any(c in name for c in "/@?#\\ \t,"):
        raise HttpReject(400, "invalid Host header")
    return name.rstrip(".")


class ResponseHead:
    """What the proxy needs from an upstream response head, found without a per-line loop."""

    __slots__ = ("chunked", "close", "content_length", "drop", "plain", "status", "upgrade_line")

    def __init__(self) -> None:
        self.plain = b""
        self.status = 0
        self.content_length = -1
        self.chunked = False
        self.close = False
        self.drop: list[tuple[int, int]] = []
        self.upgrade_line = b""

    def rebuild(self, raw: bytes, extra: list[bytes]) -> bytes:
        """``raw`` without the hop-by-hop lines, plus ``extra`` header lines."""
        if not extra:
            # Heads are cached by their bytes, so the plain rebuild is computed once.
            if not self.drop:
                return raw
            if self.plain:
                return self.plain
        pieces: list[bytes] = []
        position = 0
        for start, end in self.drop:
            pieces.append(raw[position:start])
            position = end
        pieces.append(raw[position:-4])
        for line in extra:
            pieces.append(b"\r\n" + line)
        pieces.append(b"\r\n\r\n")
        rebuilt = b"".join(pieces)
        if not extra:
            self.plain = rebuilt
        return rebuilt


_RESPONSE_FIELDS: Final = tuple(
    (name, b"\r\n" + name + b":")
    for name in (
        b"content-length",
        b"connection",
        b"transfer-encoding",
        b"keep-alive",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
    )
)
_PLAIN_CONNECTION_TOKENS: Final = frozenset({b"keep-alive", b"close", b"upgrade", b""})


_RESPONSE_CACHE: Final[dict[bytes, ResponseHead]] = {}
_RESPONSE_CACHE_SIZE: Final = 1024


def parse_response_head(raw: bytes) -> ResponseHead:
    """Check an upstream response head (ending in CRLFCRLF); ``ValueError`` if unusable.

    The result depends on the bytes alone, so repeated heads (the same asset within the
    same second) are answered from a small cache; results are never modified by callers.
    """
    cached = _RESPONSE_CACHE.get(raw)
    if cached is not None:
        return cached
    result = _parse_response_head(raw)
    if len(_RESPONSE_CACHE) >= _RESPONSE_CACHE_SIZE:
        _RESPONSE_CACHE.clear()
    _RESPONSE_CACHE[raw] = result
    return result


def _parse_response_head(raw: bytes) -> ResponseHead:
    if raw[:7] != b"HTTP/1." or raw[8:9] != b" " or not raw[9:12].isdigit():
        raise ValueError("bad status line")
    result = ResponseHead()
    status = result.status = int(raw[9:12])
    if status < 100:
        raise ValueError("bad status code")
    result.close = raw[7:8] == b"0"
    if b"\r\n " in raw or b"\r\n\t" in raw:
        raise ValueError("folded header line")
    lowered = raw.lower()
    if b" :" in lowered or b"\t:" in lowered:
        raise ValueError("whitespace before a colon")
    connection_tokens: set[bytes] = set()
    for name, key in _RESPONSE_FIELDS:
        start = lowered.find(key)
        while start >= 0:
            end = lowered.find(b"\r\n", start + 2)
            _field(
                result,
                raw,
                name,
                lowered[start + len(key) : end].strip(),
                start,
                end,
                connection_tokens,
            )
            start = lowered.find(key, end)
    if result.chunked and result.content_length >= 0:
        raise ValueError("Content-Length together with Transfer-Encoding")
    if len(result.drop) > 1:
        result.drop.sort()
    if not _PLAIN_CONNECTION_TOKENS.issuperset(connection_tokens):
        # Connection names other headers as hop-by-hop: drop those lines too (rare).
        for token in connection_tokens - _PLAIN_CONNECTION_TOKENS:
            start = lowered.find(b"\r\n" + token + b":")
            while start >= 0:
                end = lowered.find(b"\r\n", start + 2)
                result.drop.append((start, end))
                start = lowered.find(b"\r\n" + token + b":", end)
        result.drop.sort()
    return result


def _field(
    result: ResponseHead,
    raw: bytes,
    name: bytes,
    value: bytes,
    start: int,
    end: int,
    connection_tokens: set[bytes],
) -> None:
    if name == b"content-length":
        if not value.isdigit() or len(value) > 18:
            raise ValueError("bad Content-Length")
        if result.content_length >= 0 and int(value) != result.content_length:
            raise ValueError("conflicting Content-Length")
        result.content_length = int(value)
        return
    if name == b"transfer-encoding":
        if value != b"chunked" or result.chunked:
            raise ValueError("unsupported Transfer-Encoding")
        result.chunked = True  # relayed as it is: the chunk framing passes through
        return
    if name == b"connection":
        tokens = {t.strip() for t in value.split(b",")}
        connection_tokens |= tokens
        if b"close" in tokens:
            result.close = True
    elif name == b"upgrade" and result.status == 101:
        result.upgrade_line = raw[start + 2 : end]
    result.drop.append((start, end))
