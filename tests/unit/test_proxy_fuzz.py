"""Fuzzing the request-head parser and the router: no crash, no hang, only clean answers.

Anything the parser accepts must route to a well-formed decision; anything it refuses must
be an ``HttpReject`` with a 4xx/5xx status, never another exception.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coder_migrate.proxy.exchange import ChunkScanner
from coder_migrate.proxy.http1 import HttpReject, RequestHead, RequestParser, parse_response_head
from coder_migrate.proxy.router import AppRoute, Forward, Local, Reject, RouteTable, route

TABLES = [
    RouteTable(mode="workspace-proxy", wildcard_suffix=".apps.example.com"),
    RouteTable(mode="satellite", wildcard_suffix="--apps.example.com", path_apps=False),
]


class Sink:
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)

    def on_request_body(self, chunk: bytes) -> None:
        pass

    def on_request_end(self) -> None:
        pass


def check(data: bytes, split: int) -> None:
    sink = Sink()
    parser = RequestParser(sink, max_head_bytes=4096, max_headers=20, max_request_line_bytes=512)
    try:
        parser.feed(data[:split])
        parser.feed(data[split:])
    except HttpReject as reject:
        assert 400 <= reject.status < 600
    for head in sink.heads:
        assert head.path.startswith("/")
        for table in TABLES:
            decision = route(head, table)
            assert isinstance(decision, Local | Forward | Reject | AppRoute)
            if isinstance(decision, Reject):
                assert 300 <= decision.status < 600
            if isinstance(decision, AppRoute) and decision.access_method == "tcp":
                assert decision.app_slug_or_port.isdigit() and decision.agent_id
            elif isinstance(decision, AppRoute) and decision.access_method != "terminal":
                assert decision.username and decision.workspace and decision.app_slug_or_port
                assert decision.upstream_path.startswith("/")
            assert decision.metric_path.startswith("/")


token = st.sampled_from([b"GET", b"POST", b"HEAD", b"CONNECT", b"OPTIONS", b"G\x00T", b"PUT"])
target = st.one_of(
    st.sampled_from(
        [
            b"/",
            b"/healthz",
            b"/@alice/dev.main/apps/code/",
            b"/%40a/b/apps/c/x?y",
            b"/@a/b/apps",
            b"/api/v2/workspaceagents/8c1a6f0e-3b1d-4c7e-9a55-2f4be0c3d111/pty",
            b"/api/v2/workspaceagents/8c1a6f0e-3b1d-4c7e-9a55-2f4be0c3d111/tcp?port=22",
            b"http://evil/",
            b"*",
        ]
    ),
    st.binary(max_size=40).map(lambda b: b"/" + b),
)
host = st.one_of(
    st.sampled_from(
        [
            b"app--main--dev--alice.apps.example.com",
            b"8080--m--d--u.apps.example.com:443",
            b"x--apps.example.com",
            b"[::1]:80",
            b"",
        ]
    ),
    st.binary(max_size=30),
)
header = st.tuples(
    st.sampled_from(
        [
            b"Content-Length",
            b"Transfer-Encoding",
            b"Connection",
            b"Upgrade",
            b"Host",
            b"Cookie",
            b"X-A",
        ]
    ),
    st.binary(max_size=20),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    lines = [
        draw(token)
        + b" "
        + draw(target)
        + b" "
        + draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2"]))
    ]
    if draw(st.booleans()):
        lines.append(b"Host: " + draw(host))
    for name, value in draw(st.lists(header, max_size=6)):
        lines.append(name + b": " + value)
    separator = draw(st.sampled_from([b"\r\n", b"\n", b"\r\n\r\n"]))
    return separator.join(lines) + b"\r\n\r\n" + draw(st.binary(max_size=30))


@settings(max_examples=400, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.integers(min_value=0, max_value=200))
def test_structured_requests(data: bytes, split: int) -> None:
    check(data, split)


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
def test_random_bytes(data: bytes, split: int) -> None:
    check(data, split)


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=200))
def test_response_heads_parse_or_refuse(data: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\n" + data + b"\r\n\r\n"
    try:
        parsed = parse_response_head(raw)
    except ValueError:
        return
    rebuilt = parsed.rebuild(raw, [b"Connection: close"])
    assert rebuilt.startswith(b"HTTP/1.1 200") and rebuilt.endswith(b"\r\n\r\n")


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=200))
def test_chunk_scanner_ends_or_refuses(data: bytes) -> None:
    try:
        end = ChunkScanner().feed(data)
    except ValueError:
        return
    assert -1 <= end <= len(data)
