"""Regression corpus of the proxy's hardening: one test per case, raw sockets, bounded time.

A satellite-mode proxy in front of a scripted upstream (tests/fixtures/scripted.py) covers
what an upstream can do wrong; a workspace proxy in front of the emulator covers idle
websockets and tunnels. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from tests.fixtures.coderd import CoderEmulator
from tests.fixtures.proxy import ProxyFactory, RunningProxy, workspace_proxy_env
from tests.fixtures.scripted import ScriptedUpstream

pytestmark = pytest.mark.integration

WILDCARD = "*.apps.eu.lab.internal"
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
OWNER = "platform-bot"
WORKSPACE = "migration-check-us-east"


def satellite(
    factory: ProxyFactory, upstream: ScriptedUpstream, tmp_path: Path, **env: str
) -> RunningProxy:
    return factory(
        {
            "CODER_PROXY_MODE": "satellite",
            "CODER_PRIMARY_ACCESS_URL": upstream.url,
            "CODER_PROXY_SATELLITE_KEY_FILE": str(tmp_path / f"key-{uuid.uuid4().hex}.pem"),
            "CODER_PROXY_HEADER_TIMEOUT": "1",
            **env,
        }
    )


def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data``, read until the proxy closes (or ``timeout`` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        return received


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def metric(proxy: RunningProxy, pattern: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{proxy.metrics_port}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if re.match(pattern, line):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- what an upstream can do wrong ---------------------------------------------------------


def test_an_unsolicited_101_is_a_502(
    proxy_factory: ProxyFactory, scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    proxy = satellite(proxy_factory, scripted_upstream, tmp_path)
    answer = exchange(proxy.port, b"GET /101 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 502 "), answer[:100]


def test_a_10kb_chunk_size_line_is_a_502(
    proxy_factory: ProxyFactory, scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    proxy = satellite(proxy_factory, scripted_upstream, tmp_path)
    answer = exchange(proxy.port, b"GET /bad-chunk HTTP/1.1\r\nHost: h\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 502 "), answer[:100]
    assert b"1111" not in answer


# -- what a client can send -----------------------------------------------------------------


def test_content_length_with_surrounding_whitespace_is_accepted(
    proxy_factory: ProxyFactory, scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    proxy = satellite(proxy_factory, scripted_upstream, tmp_path)
    answer = exchange(
        proxy.port,
        b"POST /cl HTTP/1.1\r\nHost: h\r\nContent-Length: 6 \r\nConnection: close\r\n\r\nabcdef",
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    assert scripted_upstream.requests[-1].body == b"abcdef"


def test_headers_with_underscores_never_reach_the_app(
    proxy_factory: ProxyFactory, scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    proxy = satellite(proxy_factory, scripted_upstream, tmp_path)
    answer = exchange(
        proxy.port,
        b"GET /u HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\nX_Real_User: admin\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    head = scripted_upstream.requests[-1].head.lower()
    assert b"transfer_encoding" not in head and b"x_real_user" not in head


def test_bytes_after_an_upgrade_head_wait_for_the_101(
    proxy_factory: ProxyFactory, scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    proxy = satellite(proxy_factory, scripted_upstream, tmp_path)
    early = b"frame-bytes-sent-early"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(
            b"GET /upgrade HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            + early
        )
        _, received = closed_within(sock, 2.0)
    assert received.startswith(b"HTTP/1.1 101 ")
    recorded = scripted_upstream.requests[-1]
    assert recorded.before_answer == b""  # nothing past the head before the upstream's 101
    assert recorded.after_answer == early


def test_a_refused_upgrade_never_serves_the_bytes_after_it(
    proxy_factory: ProxyFactory, scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    proxy = satellite(proxy_factory, scripted_upstream, tmp_path)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n"
    answer = exchange(
        proxy.port,
        b"GET /refuse-upgrade HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n"
        + smuggled,
    )
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 ") == 1
    assert b"/smuggled" not in b"".join(scripted_upstream.paths())
    recorded = scripted_upstream.requests[-1]
    assert recorded.before_answer == b"" and recorded.after_answer == b""


def test_leading_crlf_cannot_keep_a_connection_open(
    proxy_factory: ProxyFactory, scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    proxy = satellite(proxy_factory, scripted_upstream, tmp_path)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.settimeout(0.2)
        received = b""
        closed = False
        while time.monotonic() - started < 8 and not closed:
            try:
                sock.sendall(b"\r\n")
                chunk = sock.recv(4096)
                closed = not chunk
                received += chunk
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
    assert closed and received.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 4  # header timeout 1 s, swept every second
    assert metric(proxy, r'coderd_api_requests_processed_total\{code="408"') == 1


def test_idle_and_silent_connections_are_closed(
    proxy_factory: ProxyFactory, scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    proxy = satellite(proxy_factory, scripted_upstream, tmp_path, CODER_PROXY_IDLE_TIMEOUT="1")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as silent:
        closed, received = closed_within(silent, 4)
        assert closed and received == b""  # never spoke: closed, nothing to answer
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as idle:
        idle.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        closed, received = closed_within(idle, 4)
        assert closed and received.count(b"HTTP/1.1 200 ") == 1


# -- caps -------------------------------------------------------------------------------------


def test_the_global_connection_cap(
    proxy_factory: ProxyFactory, scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    proxy = satellite(
        proxy_factory,
        scripted_upstream,
        tmp_path,
        CODER_PROXY_MAX_CONNECTIONS="20",
        CODER_PROXY_HEADER_TIMEOUT="30",
    )
    held = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(20)]
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as over:
            # Refused at accept: the 503 comes before the client says anything.
            closed, received = closed_within(over, 3)
        assert closed and received.startswith(b"HTTP/1.1 503 ")
        held.pop().close()
        deadline = time.monotonic() + 5
        answer = b""
        while time.monotonic() < deadline and not answer.startswith(b"HTTP/1.1 200"):
            answer = exchange(
                proxy.port, b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
            )
        assert answer.startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()


BALANCER = "127.0.0.2"  # the load balancer's address: a loopback alias (health checks use .1)


def request_as(port: int, client: str, *, prefix: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(BALANCER, 0))
    sock.sendall(
        prefix + b"GET /who HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: %s\r\n\r\n" % client.encode()
    )
    return sock


def first_status(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_per_client_cap_keys_on_the_client_behind_a_trusted_balancer(
    proxy_factory: ProxyFactory, scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    proxy = satellite(
        proxy_factory,
        scripted_upstream,
        tmp_path,
        CODER_PROXY_TRUSTED_ORIGINS=f"{BALANCER}/32",
        CODER_PROXY_TRUSTED_HEADERS="X-Forwarded-For",
        CODER_PROXY_MAX_CONNECTIONS_PER_CLIENT="2",
        CODER_PROXY_IDLE_TIMEOUT="30",
    )
    first, second = request_as(proxy.port, "203.0.113.7"), request_as(proxy.port, "203.0.113.7")
    try:
        assert first_status(first) == first_status(second) == b"HTTP/1.1 200 OK"
        third = request_as(proxy.port, "203.0.113.7")
        assert first_status(third).startswith(b"HTTP/1.1 503")
        other = request_as(proxy.port, "198.51.100.1, 203.0.113.8")
        assert first_status(other) == b"HTTP/1.1 200 OK"
        # The app sees the client, not the balancer, and not what the client claimed.
        assert b"X-Forwarded-For: 203.0.113.8" in scripted_upstream.requests[-1].head
    finally:
        for sock in (first, second):
            sock.close()


def test_proxy_protocol_from_a_trusted_balancer_names_the_client(
    proxy_factory: ProxyFactory, scripted_upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    proxy = satellite(
        proxy_factory,
        scripted_upstream,
        tmp_path,
        CODER_PROXY_TRUSTED_ORIGINS=BALANCER,
        CODER_PROXY_PROXY_PROTOCOL="true",
        CODER_PROXY_MAX_CONNECTIONS_PER_CLIENT="1",
    )
    one = request_as(proxy.port, "1.1.1.1", prefix=b"PROXY TCP4 192.0.2.5 127.0.0.1 4000 80\r\n")
    try:
        assert first_status(one) == b"HTTP/1.1 200 OK"
        assert b"X-Forwarded-For: 192.0.2.5" in scripted_upstream.requests[-1].head
        two = request_as(
            proxy.port, "1.1.1.1", prefix=b"PROXY TCP4 192.0.2.5 127.0.0.1 4001 80\r\n"
        )
        assert first_status(two).startswith(b"HTTP/1.1 503")
        junk = request_as(proxy.port, "1.1.1.1")  # a trusted origin must send the header
        assert first_status(junk).startswith(b"HTTP/1.1 400")
        junk.close()
        direct = exchange(proxy.port, b"GET /d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert direct.startswith(b"HTTP/1.1 200 ")  # others are not asked for one
    finally:
        one.close()


# -- idle websockets and tunnels --------------------------------------------------------------


@pytest.fixture
def keepalive_proxy(coderd_v2: CoderEmulator, proxy_factory: ProxyFactory) -> RunningProxy:
    return proxy_factory(
        workspace_proxy_env(
            coderd_v2,
            "idle",
            CODER_PROXY_WEBSOCKET_IDLE_TIMEOUT="2",
            CODER_PROXY_TUNNEL_PING_INTERVAL="1",
            CODER_PROXY_FRAME_TIMEOUT="1",
        )
    )


def tunnel_url(coderd: CoderEmulator, proxy: RunningProxy) -> tuple[str, dict[str, Any]]:
    agent = next(a for a in coderd.agents() if a["workspace_name"] == WORKSPACE)
    base = f"ws://127.0.0.1:{proxy.port}/api/v2/workspaceagents/{agent['agent_id']}/tcp?port=22"
    session = coderd.user_token(OWNER)
    token = httpx.post(
        f"{coderd.url}/api/v2/applications/reconnecting-pty-signed-token",
        headers={"Coder-Session-Token": session},
        json={"url": base, "agentID": agent["agent_id"]},
    ).json()["signed_token"]
    return f"{base}&coder_signed_app_token_23db1dde={token}", agent


def test_an_idle_websocket_relay_is_closed(
    keepalive_proxy: RunningProxy, coderd_v2: CoderEmulator
) -> None:
    session = coderd_v2.user_token(OWNER)
    host = f"code-server--main--{WORKSPACE}--{OWNER}{WILDCARD[1:]}"
    cookie = f"coder_subdomain_app_session_token={session}"

    async def scenario() -> float:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                f"http://127.0.0.1:{keepalive_proxy.port}/ws/echo",
                headers={"Host": host, "Cookie": cookie},
                autoping=False,
            ) as ws,
        ):
            await ws.send_str("hello")
            assert (await ws.receive(timeout=5)).data == "hello"
            started = time.monotonic()
            message = await ws.receive(timeout=8)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            return time.monotonic() - started

    assert 1.5 < asyncio.run(scenario()) < 6


def test_a_healthy_idle_tunnel_survives_and_a_silent_one_is_closed(
    keepalive_proxy: RunningProxy, coderd_v2: CoderEmulator
) -> None:
    url, _agent = tunnel_url(coderd_v2, keepalive_proxy)

    async def healthy() -> None:
        async with ws_connect(url, ping_interval=None) as ws:  # answers pings by itself
            await asyncio.sleep(4)  # four ping intervals of silence
            await ws.send(b"still-here")
            assert await asyncio.wait_for(ws.recv(), 5) == b"still-here"

    asyncio.run(healthy())
    path = url.removeprefix(f"ws://127.0.0.1:{keepalive_proxy.port}")
    with socket.create_connection(("127.0.0.1", keepalive_proxy.port), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        closed, received = closed_within(sock, 6)  # never answers the proxy's ping
    assert received.startswith(b"HTTP/1.1 101 ") and b"\x89" in received  # a ping came
    assert closed


def test_a_tunnel_frame_that_never_completes_is_cut_off(
    keepalive_proxy: RunningProxy, coderd_v2: CoderEmulator
) -> None:
    url, _agent = tunnel_url(coderd_v2, keepalive_proxy)
    path = url.removeprefix(f"ws://127.0.0.1:{keepalive_proxy.port}")
    with socket.create_connection(("127.0.0.1", keepalive_proxy.port), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        sock.sendall(b"\x82")  # one byte of a frame header, then nothing
        started = time.monotonic()
        closed, received = closed_within(sock, 6)
    assert closed and time.monotonic() - started < 4
    assert b"\x88" in received  # a close frame (policy violation) before the end
