"""Request-head parsing, limits and smuggling checks; response heads; chunk framing."""

from __future__ import annotations

import pytest

from coder_migrate.proxy.exchange import ChunkScanner
from coder_migrate.proxy.http1 import HttpReject, RequestHead, RequestParser, parse_response_head
from coder_migrate.proxy.responses import simple_response


class Recorder:
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []
        self.body = b""
        self.ends = 0

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)

    def on_request_body(self, chunk: bytes) -> None:
        self.body += chunk

    def on_request_end(self) -> None:
        self.ends += 1


def feed(data: bytes, **limits: int) -> Recorder:
    recorder = Recorder()
    RequestParser(recorder, **limits).feed(data)
    return recorder


def status_of(data: bytes, **limits: int) -> int:
    with pytest.raises(HttpReject) as caught:
        feed(data, **limits)
    return caught.value.status


def test_a_plain_request() -> None:
    recorder = feed(
        b"GET /a?b=c HTTP/1.1\r\nHost: Example.COM:8080\r\nCookie: x=1; coder_y=2\r\n\r\n"
    )
    head = recorder.heads[0]
    assert (head.method, head.path, head.query, head.host) == ("GET", "/a", "b=c", "example.com")
    assert head.keep_alive and not head.upgrade and not head.has_body
    assert head.cookies("coder_y") == ["2"]
    assert recorder.ends == 1


def test_chunked_body_is_decoded_and_pipelined_requests_are_seen() -> None:
    recorder = feed(
        b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert recorder.body == b"abcde"
    assert [h.path for h in recorder.heads] == ["/u", "/next"]
    assert recorder.heads[0].chunked


def test_upgrade_returns_the_bytes_after_the_head() -> None:
    recorder = Recorder()
    rest = RequestParser(recorder).feed(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nFRAME"
    )
    assert rest == b"FRAME"
    assert recorder.heads[0].upgrade


@pytest.mark.parametrize(
    "request_bytes",
    [
        # CL.TE and TE.CL smuggling shapes
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\x0bchunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1_0\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        # obs-fold, bare LF, NUL
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\nX: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
        # Host
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
        # never an open proxy
        b"GET http://elsewhere.example/ HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n",
        b"CONNECT elsewhere.example:443 HTTP/1.1\r\nHost: elsewhere.example:443\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        # chunk framing
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_smuggling_shapes_are_rejected_with_a_4xx(request_bytes: bytes) -> None:
    assert 400 <= status_of(request_bytes) < 500


def test_limits() -> None:
    long_line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    assert status_of(long_line) == 414
    many = (
        b"GET / HTTP/1.1\r\nHost: h\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(101))
        + b"\r\n"
    )
    assert status_of(many) == 431
    big = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 50_000 + b"\r\n\r\n"
    assert status_of(big, max_head_bytes=32 * 1024) == 431
    body = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n" + b"x" * 20
    assert status_of(body, max_body_bytes=10) == 413


def test_a_head_trickling_in_is_still_limited() -> None:
    recorder = Recorder()
    parser = RequestParser(recorder, max_head_bytes=2048, max_request_line_bytes=256)
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n")
    with pytest.raises(HttpReject) as caught:
        for _ in range(200):
            parser.feed(b"X-Slow: " + b"a" * 40 + b"\r\n")
    assert caught.value.status == 431


def test_a_repeated_request_is_the_same_request_and_anything_else_is_parsed_again() -> None:
    recorder = Recorder()
    parser = RequestParser(recorder)
    request = b"GET /poll HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\n\r\n"
    for _ in range(3):
        parser.feed(request)
    assert [(h.path, h.headers) for h in recorder.heads] == [
        ("/poll", [(b"Host", b"h"), (b"Cookie", b"a=1")])
    ] * 3
    assert recorder.ends == 3
    # A different request, one split over two reads, and two in one read: each parsed anew.
    parser.feed(b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n")
    parser.feed(request[:10])
    parser.feed(request[10:])
    parser.feed(request + request.replace(b"/poll", b"/next"))
    assert [h.path for h in recorder.heads[3:]] == ["/other", "/poll", "/poll", "/next"]
    # A request with a body is never repeated from memory: its body must reach the sink.
    post = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab"
    parser.feed(post)
    parser.feed(post)
    assert recorder.body == b"abab"
    # Bytes that repeat a request but arrive inside another one are that request's bytes.
    parser.feed(b"POST /q HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(request))
    parser.feed(request)
    assert recorder.body == b"abab" + request
    assert recorder.ends == 3 + 4 + 2 + 1


def test_http_version_two_is_refused() -> None:
    assert status_of(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n") in (400, 505)


RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
    b"Keep-Alive: timeout=5\r\nX-Other: 1\r\n\r\n"
)


def test_response_head_drops_hop_by_hop_and_keeps_the_rest() -> None:
    parsed = parse_response_head(RESPONSE)
    assert parsed.status == 200 and parsed.content_length == 5 and not parsed.close
    rebuilt = parsed.rebuild(RESPONSE, [b"Connection: close"])
    assert rebuilt == (
        b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 5\r\nX-Other: 1\r\n"
        b"Connection: close\r\n\r\n"
    )


def test_response_connection_tokens_name_more_hop_by_hop_headers() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: s\r\nContent-Length: 0\r\n\r\n"
    assert (
        parse_response_head(raw).rebuild(raw, []) == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"garbage\r\n\r\n",
    ],
)
def test_unusable_upstream_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match=r".+"):
        parse_response_head(raw)


def test_chunk_scanner_finds_the_end_across_reads() -> None:
    body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    for split in range(1, len(body)):
        scanner = ChunkScanner()
        first = scanner.feed(body[:split])
        if first >= 0:
            assert first == len(body) - 4
            continue
        assert scanner.feed(body[split:]) == len(body) - 4 - split


def test_chunk_scanner_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="chunk"):
        ChunkScanner().feed(b"xyz\r\n")


def test_simple_response_shape() -> None:
    assert simple_response(404, b"nope", close=True) == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 4\r\nConnection: close\r\n\r\nnope"
    )
