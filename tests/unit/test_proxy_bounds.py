"""Bounds without sockets: websocket frames read in pieces, client addresses behind trusted
balancers, connection caps, the buffer budget, the login hand-off's pieces and the hardening
settings."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import struct
from typing import Any, cast

import pytest

from coder_migrate.errors import ConfigError
from coder_migrate.lab.coderd.app_auth import go_query_encode, wildcard_matches
from coder_migrate.proxy.admission import (
    PROXY_V2_SIGNATURE,
    BufferBudget,
    ClientAddresses,
    ConnectionCaps,
    ProxyHeaderError,
    parse_proxy_header,
)
from coder_migrate.proxy.auth import hand_off_cookie, subdomain_session_cookie
from coder_migrate.proxy.config import load_settings
from coder_migrate.proxy.tunnel import READ_SIZE, WebSocketTunnel
from coder_migrate.proxy.wsframes import FrameError, FrameReader, frame_header

MASK = b"\x0f\xf0\xaa\x55"


def masked(opcode: int, payload: bytes, *, fin: bool = True, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        header = struct.pack("!BB", first, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return header + MASK + body


class Sink:
    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.controls: list[tuple[int, bytes]] = []

    def on_payload(self, data: bytes) -> None:
        self.pieces.append(data)

    def on_control(self, opcode: int, payload: bytes) -> None:
        self.controls.append((opcode, payload))


def test_frames_split_at_every_byte_give_the_same_stream() -> None:
    stream = (
        masked(0x2, b"hello ")
        + masked(0x9, b"pi")
        + masked(0x1, "wörld".encode(), fin=False)
        + masked(0x0, b"!", fin=True)
        + masked(0x2, os.urandom(300))
    )
    whole = Sink()
    FrameReader(whole).feed(stream)
    for split in range(1, len(stream)):
        sink = Sink()
        reader = FrameReader(sink)
        reader.feed(stream[:split])
        reader.feed(stream[split:])
        assert b"".join(sink.pieces) == b"".join(whole.pieces)
        assert sink.controls == [(0x9, b"pi")]


def test_a_huge_frame_is_streamed_not_held() -> None:
    sink = Sink()
    reader = FrameReader(sink)
    piece = os.urandom(64 << 10)
    reader.feed(masked(0x2, piece, length=16 << 20)[: 14 + len(piece)])
    assert b"".join(sink.pieces) == piece  # handed on before the frame is complete
    assert not reader.partial  # nothing buffered: only the payload's rest is outstanding
    reader.feed(b"\x00")
    assert sink.pieces[-1] == bytes([MASK[(64 << 10) % 4]])


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (struct.pack("!BB", 0x82, 3) + b"abc", 1002),  # not masked
        (masked(0x2, b"x")[:1].replace(b"\x82", b"\xc2") + masked(0x2, b"x")[1:], 1002),  # RSV1
        (masked(0x9, b"p", fin=False), 1002),  # fragmented control frame
        (masked(0x9, b"p" * 126), 1002),  # control frame over 125 bytes
        (masked(0x0, b"orphan"), 1002),  # continuation without a message
        (masked(0x3, b""), 1002),  # reserved opcode
        (masked(0x1, b"\xff\xfe"), 1007),  # invalid UTF-8
    ],
)
def test_protocol_errors_carry_their_close_code(data: bytes, code: int) -> None:
    with pytest.raises(FrameError) as error:
        FrameReader(Sink()).feed(data)
    assert error.value.code == code


class Transport:
    """What the tunnel writes to one side; reading is never paused here."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def writelines(self, pieces: Any) -> None:
        self.written.append(b"".join(pieces))

    def is_closing(self) -> bool:
        return False


def _tunnel() -> tuple[WebSocketTunnel, Transport, Transport]:
    loop = asyncio.new_event_loop()
    loop.close()  # only its clock is read
    tunnel = WebSocketTunnel(loop, lambda to_agent, to_client: None)
    client, agent = Transport(), Transport()
    tunnel.client, tunnel.agent = cast(Any, client), cast(Any, agent)
    tunnel.open = True
    return tunnel, client, agent


def test_tunnel_reads_through_the_shared_buffer_keep_nothing_of_it() -> None:
    # Both sides read into one buffer the next read overwrites (the loop asks get_buffer,
    # the kernel fills it, buffer_updated says how much): every frame must still carry
    # exactly the bytes read, at each header size (7-bit, 16-bit and 64-bit lengths).
    tunnel, client, agent = _tunnel()
    sent = []
    for length in (1, 125, 126, 65_535, 65_536, READ_SIZE):
        data = os.urandom(length)
        buffer = tunnel.agent_side.get_buffer(-1)
        assert len(buffer) >= length
        buffer[:length] = data
        tunnel.agent_side.buffer_updated(length)
        sent.append(data)
    assert client.written == [frame_header(0x2, len(d)) + d for d in sent]
    # The client's frames, split across reads at odd places, arrive unmasked.
    payload = os.urandom(3 * READ_SIZE // 2)
    stream = masked(0x2, payload) + masked(0x9, b"pi") + masked(0x2, b"tail")
    position = 0
    for size in (7, READ_SIZE, 3, READ_SIZE):
        piece = stream[position : position + size]
        buffer = tunnel.get_buffer(-1)
        buffer[: len(piece)] = piece
        tunnel.buffer_updated(len(piece))
        position += len(piece)
    assert position == len(stream)
    assert b"".join(agent.written) == payload + b"tail"
    assert client.written[-1] == frame_header(0xA, 2) + b"pi"  # the pong


def test_a_partial_header_is_what_the_frame_deadline_watches() -> None:
    reader = FrameReader(Sink())
    reader.feed(b"\x82")
    assert reader.partial
    assert frame_header(0x2, 70_000)[:2] == b"\x82\x7f"


# -- client addresses and caps ---------------------------------------------------------------


def test_proxy_protocol_v1_and_v2() -> None:
    assert parse_proxy_header(b"PROXY TCP4 192.0.2.1 10.0.0.1 5 80\r\nGET") == ("192.0.2.1", 36)
    assert parse_proxy_header(b"PROXY TCP4 192.0") is None
    assert parse_proxy_header(b"PROXY UNKNOWN\r\n") == ("", 15)
    v2 = (
        PROXY_V2_SIGNATURE
        + bytes([0x21, 0x11])
        + struct.pack("!H", 12)
        + ipaddress.IPv4Address("198.51.100.4").packed
        + bytes(4)
        + struct.pack("!HH", 1, 2)
    )
    assert parse_proxy_header(v2 + b"rest") == ("198.51.100.4", len(v2))
    assert parse_proxy_header(v2[:10]) is None
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(b"PROXY TCP4 " + b"9" * 200)


def test_the_client_behind_trusted_balancers() -> None:
    addresses = ClientAddresses([ipaddress.ip_network("10.0.0.0/8")], header=b"X-Forwarded-For")
    headers = [(b"X-Forwarded-For", b"6.6.6.6, 203.0.113.9, 10.1.1.1")]
    assert addresses.from_header("10.0.0.2", headers) == "203.0.113.9"
    assert addresses.from_header("192.0.2.7", headers) == "192.0.2.7"  # not a balancer
    assert addresses.from_header("10.0.0.2", [(b"x-forwarded-for", b"junk")]) == "10.0.0.2"
    assert addresses.from_header("10.0.0.2", []) == "10.0.0.2"
    assert not ClientAddresses().is_trusted("10.0.0.2")


def test_connection_caps_global_per_client_and_rekeyed() -> None:
    caps = ConnectionCaps(total=3, per_client=2)
    assert caps.admit("a") and caps.admit("a") and not caps.admit("a")
    assert caps.admit("lb", exempt=True) and not caps.admit("b")  # the global cap
    caps.release("a")
    assert caps.rekey("lb", "c") and caps.by_client == {"a": 1, "c": 1}
    assert caps.admit("c")
    assert not caps.rekey("a", "c")  # c is at its cap: a keeps its count
    assert caps.open == 3


def test_the_buffer_budget_pauses_and_resumes() -> None:
    budget = BufferBudget(100)
    resumed: list[str] = []
    budget.take(120)
    assert budget.exhausted
    budget.wait("owner", lambda: resumed.append("owner"))
    budget.give(10)
    assert not resumed
    budget.give(20)
    assert resumed == ["owner"] and budget.peak == 120


# -- the login hand-off's pieces -------------------------------------------------------------


def test_hand_off_cookies_as_coder_sets_them() -> None:
    subdomain = hand_off_cookie("subdomain", "k-s", "*.apps.example.com", secure=True).decode()
    assert subdomain.startswith(subdomain_session_cookie("*.apps.example.com") + "=k-s;")
    assert "; Domain=.apps.example.com; Path=/; HttpOnly; SameSite=Lax; Secure" in subdomain
    path = hand_off_cookie("path", "k-s", "", secure=False).decode()
    assert path == "coder_path_app_session_token=k-s; Path=/; HttpOnly; SameSite=Lax"


def test_go_query_encoding_and_wildcards() -> None:
    assert go_query_encode([("z", "1"), ("a", "x y"), ("a", "/")]) == "a=x%20y&a=%2F&z=1"
    assert wildcard_matches("*.apps.example.com", "code--ws--u.apps.example.com")
    assert not wildcard_matches("*.apps.example.com", "a.b.apps.example.com")
    assert wildcard_matches("*--apps.example.com", "code--ws--u--apps.example.com")


# -- settings --------------------------------------------------------------------------------


BASE = {
    "CODER_PRIMARY_ACCESS_URL": "https://coder.example.com",
    "CODER_PROXY_SESSION_TOKEN": "00000000-0000-0000-0000-000000000001:" + "a" * 64,
}


def test_hardening_settings(tmp_path: object) -> None:
    settings = load_settings(
        environ={
            **BASE,
            "CODER_PROXY_TRUSTED_ORIGINS": "10.0.0.0/8, 192.0.2.1",
            "CODER_PROXY_TRUSTED_HEADERS": "X-Forwarded-For",
            "CODER_PROXY_MAX_CONNECTIONS": "500",
            "CODER_PROXY_TUNNEL_PING_INTERVAL": "15s",
        },
        env_file=None,
    )
    hardening = settings.hardening
    assert [str(n) for n in hardening.trusted_origins] == ["10.0.0.0/8", "192.0.2.1/32"]
    assert hardening.trusted_header == "x-forwarded-for"
    assert (hardening.max_connections, hardening.tunnel_ping_interval) == (500, 15.0)
    for name, value, expected in (
        ("CODER_PROXY_TRUSTED_ORIGINS", "10.0.0.0/33", "CIDRs"),
        ("CODER_PROXY_TRUSTED_HEADERS", "X-Real-IP", "X-Forwarded-For"),
        ("CODER_PROXY_BUFFER_BUDGET_MIB", "0", "an integer >= 1"),
    ):
        with pytest.raises(ConfigError, match=f"{name} \\(environment\\): expected .*{expected}"):
            load_settings(environ={**BASE, name: value}, env_file=None)
