"""The exchange without sockets: heads built and rewritten, response framing driven with
byte strings (as h11's and mitmproxy's sans-IO layers are tested)."""

from __future__ import annotations

import pytest

from coder_migrate.proxy.exchange import (
    BodyFraming,
    Exchange,
    ReaderState,
    ResponseError,
    ResponseReader,
    ResponseStart,
    client_response_head,
    upstream_request_head,
)
from coder_migrate.proxy.http1 import RequestHead, RequestParser, parse_response_head
from coder_migrate.proxy.responses import Target, error_page, reason_phrase, simple_response

FORWARDED = b"\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https"


class Heads:
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)

    def on_request_body(self, chunk: bytes) -> None:
        pass

    def on_request_end(self) -> None:
        pass


def head_of(raw: bytes) -> RequestHead:
    sink = Heads()
    RequestParser(sink).feed(raw)
    return sink.heads[0]


def rebuilt(raw: bytes, path: bytes = b"/p", *, strip: bool = True) -> bytes:
    return upstream_request_head(head_of(raw), path, FORWARDED, strip)


def test_the_upstream_head_drops_hop_by_hop_and_sets_forwarding() -> None:
    out = rebuilt(
        b"GET /x HTTP/1.1\r\nHost: App.Example\r\nConnection: keep-alive, X-Private\r\n"
        b"X-Private: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"Accept: */*\r\n\r\n"
    )
    assert out.startswith(b"GET /p HTTP/1.1\r\n")
    assert b"Accept: */*\r\n" in out and b"Host: App.Example\r\n" in out
    for gone in (b"X-Private", b"Keep-Alive", b"TE:", b"10.0.0.1", b"Connection"):
        assert gone not in out
    assert out.count(b"X-Forwarded-For") == 1 and b"X-Forwarded-For: 192.0.2.1" in out
    assert b"X-Forwarded-Host: App.Example" in out and out.endswith(b"\r\n\r\n")


def test_coder_credentials_are_stripped_unless_forwarding_to_the_primary() -> None:
    raw = (
        b"GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; coder_session_token=s; session_token=t\r\n"
        b"Coder-Session-Token: s\r\nSession-Token: t\r\n\r\n"
    )
    out = rebuilt(raw)
    assert b"Cookie: a=1\r\n" in out and b"session" not in out.lower()
    kept = rebuilt(raw, strip=False)
    assert b"coder_session_token=s" in kept and b"Coder-Session-Token: s" in kept


def test_upgrades_http10_and_chunked_bodies() -> None:
    upgrade = rebuilt(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n" in upgrade
    old = rebuilt(b"GET / HTTP/1.0\r\n\r\n")
    assert b"Connection: close" in old
    chunked = rebuilt(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert chunked.count(b"Transfer-Encoding: chunked") == 1


def test_the_client_head_states_the_connection_and_adds_the_cookie() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\n"
    parsed = parse_response_head(raw)
    assert client_response_head(parsed, raw, True) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    )
    closing = client_response_head(parsed, raw, False, b"a=b; Path=/")
    assert closing.endswith(b"Connection: close\r\nSet-Cookie: a=b; Path=/\r\n\r\n")
    switched = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    )
    out = client_response_head(parse_response_head(switched), switched, True)
    assert out == (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )


# -- ResponseReader ------------------------------------------------------------------------


def drive(reader: ResponseReader, pieces: list[bytes], *, method: str = "GET") -> list[object]:
    """Feed pieces the way UpstreamConnection does; record heads and body slices."""
    events: list[object] = []
    for data in pieces:
        offset = 0
        if reader.state is ReaderState.HEAD:
            while True:
                raw, offset = reader.take_head(data, offset)
                if raw is None:
                    break
                start = reader.begin(parse_response_head(raw), method=method, upgrade=False)
                events.append(start)
                if start is not ResponseStart.INTERIM:
                    break
            if raw is None:
                continue
        if reader.state is ReaderState.BODY and offset < len(data):
            stop = reader.body_end(data, offset)
            events.append(data[offset:stop])
    return events


@pytest.mark.parametrize("split", range(1, 40))
def test_a_head_and_a_body_split_anywhere(split: int) -> None:
    whole = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    reader = ResponseReader()
    events = drive(reader, [whole[:split], whole[split:]])
    assert events[0] is ResponseStart.BODY
    assert b"".join(e for e in events if isinstance(e, bytes)) == b"hello"
    assert reader.state is ReaderState.DONE and reader.reusable


def test_interim_heads_then_a_chunked_body() -> None:
    reader = ResponseReader()
    events = drive(
        reader,
        [
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n",
            b"abc\r\n0\r\n\r\n",
        ],
    )
    assert events[:2] == [ResponseStart.INTERIM, ResponseStart.BODY]
    assert reader.framing is BodyFraming.CHUNKED and reader.state is ReaderState.DONE
    assert b"".join(e for e in events if isinstance(e, bytes)) == b"3\r\nabc\r\n0\r\n\r\n"


def test_no_body_after_head_204_or_length_zero() -> None:
    for raw, method in (
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", "HEAD"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", "GET"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET"),
    ):
        reader = ResponseReader()
        assert drive(reader, [raw], method=method) == [ResponseStart.COMPLETE]
        assert reader.state is ReaderState.DONE and reader.reusable


def test_close_delimited_and_overlong_bodies_are_not_reused() -> None:
    reader = ResponseReader()
    drive(reader, [b"HTTP/1.1 200 OK\r\n\r\nsome", b"more"])
    assert reader.framing is BodyFraming.UNTIL_CLOSE and not reader.reusable
    reader = ResponseReader()
    events = drive(reader, [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabEXTRA"])
    assert events[-1] == b"ab" and not reader.reusable


def test_an_unsolicited_101_and_broken_chunks_are_errors() -> None:
    reader = ResponseReader()
    with pytest.raises(ResponseError, match="101"):
        drive(reader, [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"])
    reader = ResponseReader()
    drive(reader, [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"])
    assert reader.holds_head_back  # the first size line is not known good yet
    with pytest.raises(ResponseError, match="too long"):
        reader.body_end(b"1" * 10240, 0)
    assert not reader.reusable
    with pytest.raises(ResponseError):
        ResponseReader().take_head(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, 0)


def test_a_switched_protocol_and_a_refused_upgrade() -> None:
    raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    reader = ResponseReader()
    assert reader.begin(parse_response_head(raw), method="GET", upgrade=True) is (
        ResponseStart.SWITCHED
    )
    assert reader.upgraded and not reader.reusable
    refused = ResponseReader()
    refused.begin(
        parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"),
        method="GET",
        upgrade=True,
    )
    assert not refused.reusable


def test_the_exchange_knows_when_a_retry_is_safe() -> None:
    get = Exchange(head_of(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), keep_alive=True)
    get.target, get.reused_upstream = Target("127.0.0.1", 1), True
    assert get.can_retry
    get.retried = True
    assert not get.can_retry
    post = Exchange(
        head_of(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"), keep_alive=True
    )
    post.target, post.reused_upstream = Target("127.0.0.1", 1), True
    assert not post.can_retry
    post.refuse_body()
    assert post.discard_body and not post.keep_alive
    assert not Exchange(head_of(b"GET / HTTP/1.0\r\n\r\n"), keep_alive=True).keep_alive


def test_reason_phrases_come_from_the_standard_library() -> None:
    assert reason_phrase(413) == "Request Entity Too Large"
    assert error_page(502) == b"502 Bad Gateway\n"
    assert simple_response(408, close=True).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
