"""The bundled proxy as a Coder v2 workspace proxy, against the emulator and its workspaces.

Every test runs the proxy as a real process on loopback (``proxy_factory``) and talks to it
over real sockets; the primary and the workspace agents are the emulator's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from coder_migrate.providers.coder.app_tokens import AppRequest, sign_app_token
from coder_migrate.providers.coder.models_v2 import CryptoKey
from coder_migrate.proxy.auth import subdomain_session_cookie
from tests.fixtures.coderd import CoderEmulator
from tests.fixtures.proxy import ProxyFactory, RunningProxy

pytestmark = pytest.mark.integration

WILDCARD = "*.apps.eu.lab.internal"
OWNER = "platform-bot"
WORKSPACE = "migration-check-us-east"


def create_wsproxy(coderd: CoderEmulator) -> tuple[str, str]:
    name = f"eu-{uuid.uuid4().hex[:8]}"
    response = coderd.admin("POST", "/api/v2/workspaceproxies", {"name": name})
    assert response.status_code == 201, response.text
    return name, response.json()["proxy_token"]


def proxy_env(coderd: CoderEmulator, token: str, **extra: str) -> dict[str, str]:
    return {
        "CODER_PRIMARY_ACCESS_URL": coderd.url,
        "CODER_PROXY_SESSION_TOKEN": token,
        "CODER_WILDCARD_ACCESS_URL": WILDCARD,
        **extra,
    }


@pytest.fixture
def wsproxy(coderd_v2: CoderEmulator, proxy_factory: ProxyFactory) -> Iterator[RunningProxy]:
    _name, token = create_wsproxy(coderd_v2)
    yield proxy_factory(
        proxy_env(coderd_v2, token, CODER_PROXY_HEADER_TIMEOUT="1", CODER_PROXY_IDLE_TIMEOUT="5")
    )


@pytest.fixture
def agent(coderd_v2: CoderEmulator) -> dict[str, Any]:
    return next(a for a in coderd_v2.agents() if a["workspace_name"] == WORKSPACE)


@pytest.fixture
def session(coderd_v2: CoderEmulator) -> str:
    return coderd_v2.user_token(OWNER)


def app_host(app: str) -> str:
    return f"{app}--main--{WORKSPACE}--{OWNER}.apps.eu.lab.internal"


def with_cookies(host: str, cookies: dict[str, str]) -> dict[str, str]:
    """Headers for an app request (cookies as a header: they belong to this request only)."""
    return {"Host": host, "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


def session_cookie(session: str) -> dict[str, str]:
    return {subdomain_session_cookie(WILDCARD): session}


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


# -- registration and health ------------------------------------------------------------


def test_registration_and_health_unregistered_ok_unreachable(
    coderd_v2: CoderEmulator, proxy_factory: ProxyFactory
) -> None:
    name, token = create_wsproxy(coderd_v2)
    assert coderd_v2.health_check()[name]["status"] == "unregistered"
    proxy = proxy_factory(proxy_env(coderd_v2, token))
    deadline = time.monotonic() + 10
    status = ""
    while time.monotonic() < deadline and status != "ok":
        status = coderd_v2.health_check()[name]["status"]
        time.sleep(0.2)
    assert status == "ok"
    listed = coderd_v2.admin("GET", f"/api/v2/workspaceproxies/{name}").json()
    assert listed["path_app_url"] == proxy.url
    assert listed["wildcard_hostname"] == WILDCARD
    assert proxy.stop() == 0
    assert coderd_v2.health_check()[name]["status"] == "unreachable"
    assert '"deregistered replica' in proxy.log()


def test_health_unhealthy_when_the_report_has_errors(
    coderd_v2: CoderEmulator, proxy_factory: ProxyFactory
) -> None:
    name, token = create_wsproxy(coderd_v2)
    proxy_factory(proxy_env(coderd_v2, token))
    coderd_v2.add_fault(kind="status", path="/api/v2/buildinfo", status=503)
    time.sleep(1.2)  # the proxy re-checks the primary at most once a second
    checked = coderd_v2.health_check()[name]
    assert checked["status"] == "unhealthy"
    assert any("build info" in error for error in checked["report"]["errors"])
    coderd_v2.clear_faults()
    time.sleep(1.2)
    assert coderd_v2.health_check()[name]["status"] == "ok"


def test_own_endpoints(wsproxy: RunningProxy, coderd_v2: CoderEmulator) -> None:
    assert httpx.get(f"{wsproxy.url}/healthz").text == "OK"
    info = httpx.get(f"{wsproxy.url}/api/v2/buildinfo").json()
    assert info["workspace_proxy"] is True and info["dashboard_url"] == coderd_v2.url
    latency = httpx.get(f"{wsproxy.url}/latency-check")
    assert latency.headers["access-control-allow-origin"] == "*"
    dashboard = httpx.get(f"{wsproxy.url}/api/v2/users/me")
    assert dashboard.status_code == 400 and coderd_v2.url in dashboard.text


def test_metrics_are_served(wsproxy: RunningProxy) -> None:
    httpx.get(f"{wsproxy.url}/healthz")
    text = httpx.get(f"http://127.0.0.1:{wsproxy.metrics_port}/metrics").text
    assert 'coderd_api_requests_processed_total{code="200",method="GET",path="/healthz"}' in text
    for name in (
        "coderd_api_concurrent_requests",
        "coderd_api_concurrent_websockets",
        "coderd_api_request_latencies_seconds_bucket",
        "coder_proxy_relayed_bytes_total",
    ):
        assert name in text


# -- authentication ---------------------------------------------------------------------


def test_unauthenticated_request_is_redirected_to_the_primary(
    wsproxy: RunningProxy, coderd_v2: CoderEmulator
) -> None:
    response = httpx.get(f"{wsproxy.url}/hello", headers={"Host": app_host("code-server")})
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(f"{coderd_v2.url}/api/v2/applications/auth-redirect?redirect_uri=")


def test_session_cookie_gets_a_signed_token_and_the_app(
    wsproxy: RunningProxy, session: str, agent: dict[str, Any]
) -> None:
    with httpx.Client(base_url=wsproxy.url) as client:
        first = client.get(
            "/some/path?x=1", headers=with_cookies(app_host("code-server"), session_cookie(session))
        )
        assert first.status_code == 200, first.text
        echoed = first.json()
        assert echoed["agent_id"] == agent["agent_id"]
        assert echoed["path"] == "/some/path" and echoed["query"] == "x=1"
        # The app never sees Coder's credentials.
        assert session not in json.dumps(echoed["headers"])
        assert echoed["headers"]["X-Forwarded-For"] == "127.0.0.1"
        signed = first.cookies.get("coder_signed_app_token")
        assert signed
        # The signed token alone is enough now (verified locally).
        second = httpx.get(
            f"{wsproxy.url}/again",
            headers=with_cookies(app_host("code-server"), {"coder_signed_app_token": signed}),
        )
        assert second.status_code == 200 and second.json()["path"] == "/again"


def test_forged_and_expired_tokens_are_refused(
    wsproxy: RunningProxy, coderd_v2: CoderEmulator, agent: dict[str, Any]
) -> None:
    request = AppRequest(
        access_method="subdomain",
        base_path="/",
        username_or_id=OWNER,
        workspace_name_or_id=WORKSPACE,
        agent_name_or_id="main",
        app_slug_or_port="code-server",
    )
    forged_key = CryptoKey(
        feature="workspace_apps_token", secret="ab" * 64, sequence=1, starts_at=datetime.now(UTC)
    )
    forged = sign_app_token(
        key=forged_key,
        request=request,
        user_id="u",
        username=OWNER,
        workspace_id=agent["workspace_id"],
        agent_id=agent["agent_id"],
    )
    response = httpx.get(
        f"{wsproxy.url}/",
        headers=with_cookies(app_host("code-server"), {"coder_signed_app_token": forged}),
    )
    assert response.status_code == 303  # not relayed: sent to log in
    real_key = real_app_key(coderd_v2)
    expired = sign_app_token(
        key=real_key,
        request=request,
        user_id="u",
        username=OWNER,
        workspace_id=agent["workspace_id"],
        agent_id=agent["agent_id"],
        now=time.time() - 120,
    )
    response = httpx.get(
        f"{wsproxy.url}/",
        headers=with_cookies(app_host("code-server"), {"coder_signed_app_token": expired}),
    )
    assert response.status_code == 303
    valid = sign_app_token(
        key=real_key,
        request=request,
        user_id="u",
        username=OWNER,
        workspace_id=agent["workspace_id"],
        agent_id=agent["agent_id"],
    )
    response = httpx.get(
        f"{wsproxy.url}/",
        headers=with_cookies(app_host("code-server"), {"coder_signed_app_token": valid}),
    )
    assert response.status_code == 200  # the control: a genuine token is relayed


def real_app_key(coderd: CoderEmulator) -> CryptoKey:
    _name, token = create_wsproxy(coderd)
    response = httpx.get(
        f"{coderd.url}/api/v2/workspaceproxies/me/crypto-keys",
        params={"feature": "workspace_apps_token"},
        headers={"Coder-External-Proxy-Token": token},
    )
    assert response.status_code == 200, response.text
    keys = [CryptoKey.model_validate(k) for k in response.json()["crypto_keys"]]
    return max(keys, key=lambda k: k.sequence)


def test_an_address_that_is_not_a_known_agent_is_refused(
    wsproxy: RunningProxy, coderd_v2: CoderEmulator, agent: dict[str, Any]
) -> None:
    key = real_app_key(coderd_v2)
    unknown_agent = str(uuid.uuid4())
    request = AppRequest(
        access_method="subdomain",
        base_path="/",
        username_or_id=OWNER,
        workspace_name_or_id=WORKSPACE,
        agent_name_or_id="main",
        app_slug_or_port="code-server",
    )
    token = sign_app_token(
        key=key,
        request=request,
        user_id="u",
        username=OWNER,
        workspace_id=agent["workspace_id"],
        agent_id=unknown_agent,
        app_url=agent["apps"]["code-server"],
    )
    response = httpx.get(
        f"{wsproxy.url}/",
        headers=with_cookies(app_host("code-server"), {"coder_signed_app_token": token}),
    )
    assert response.status_code == 404
    # A Host naming the agent's own listener is not an app host: never relayed.
    backend_host = agent["apps"]["code-server"].removeprefix("http://")
    direct = httpx.get(f"{wsproxy.url}/", headers={"Host": backend_host})
    assert direct.status_code == 400 and "Dashboard" in direct.text
    absolute = raw_exchange(
        wsproxy.port,
        f"GET http://{backend_host}/ HTTP/1.1\r\nHost: {backend_host}\r\n\r\n".encode(),
    )
    assert absolute.startswith(b"HTTP/1.1 400")


# -- relaying ---------------------------------------------------------------------------


def test_path_app_port_and_large_bodies(
    wsproxy: RunningProxy, session: str, agent: dict[str, Any]
) -> None:
    with httpx.Client(base_url=wsproxy.url, timeout=30) as client:
        path_app = client.get(
            f"/@{OWNER}/{WORKSPACE}.main/apps/code-server/deep/x",
            headers={"Cookie": f"coder_path_app_session_token={session}"},
        )
        assert path_app.status_code == 200, path_app.text
        assert path_app.json()["path"] == "/deep/x"
        cookies = session_cookie(session)
        port = client.get("/p", headers=with_cookies(app_host("8080"), cookies))
        assert port.status_code == 200 and port.json()["listener"] == agent["ports"]["8080"]
        body = bytes(range(256)) * 40_000  # ~10 MB, sent chunked

        def chunks() -> Iterator[bytes]:
            for offset in range(0, len(body), 65536):
                yield body[offset : offset + 65536]

        upload = client.post(
            "/upload", headers=with_cookies(app_host("code-server"), cookies), content=chunks()
        )
        assert upload.status_code == 200, upload.text
        assert upload.json()["body_bytes"] == len(body)
        assert upload.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        download = client.get(
            "/bytes/20000000?chunk=100000", headers=with_cookies(app_host("code-server"), cookies)
        )
        assert download.status_code == 200
        expected = (b"0123456789abcdef" * (20_000_000 // 16 + 1))[:20_000_000]
        assert download.content == expected


def test_websocket_echo_and_terminal(
    wsproxy: RunningProxy, coderd_v2: CoderEmulator, session: str, agent: dict[str, Any]
) -> None:
    pty_token = httpx.post(
        f"{coderd_v2.url}/api/v2/applications/reconnecting-pty-signed-token",
        headers={"Coder-Session-Token": session},
        json={
            "url": f"ws://127.0.0.1:{wsproxy.port}/api/v2/workspaceagents/{agent['agent_id']}/pty",
            "agentID": agent["agent_id"],
        },
    ).json()["signed_token"]

    async def scenario() -> None:
        cookie = "; ".join(f"{k}={v}" for k, v in session_cookie(session).items())
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(
                f"{wsproxy.url.replace('http', 'ws')}/ws/echo",
                headers={"Host": app_host("code-server"), "Cookie": cookie},
            ) as ws:
                await ws.send_str("hello")
                assert (await ws.receive(timeout=5)).data == "hello"
                blob = bytes(range(256)) * 8192  # 2 MiB binary frame through the relay
                await ws.send_bytes(blob)
                assert (await ws.receive(timeout=10)).data == blob
            terminal_url = (
                f"{wsproxy.url.replace('http', 'ws')}/api/v2/workspaceagents/{agent['agent_id']}"
                f"/pty?reconnect={uuid.uuid4()}&coder_signed_app_token_23db1dde={pty_token}"
            )
            async with http.ws_connect(terminal_url) as ws:
                greeting = (await ws.receive(timeout=5)).data
                assert b"coder-emulator pty" in greeting
                await ws.send_str(json.dumps({"data": "echo hi\r"}))
                output = b""
                while b"echo hi" not in output:
                    output += (await ws.receive(timeout=5)).data
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with http.ws_connect(terminal_url.split("&coder_signed")[0]):
                    pass
            assert refused.value.status == 401

    asyncio.run(scenario())


def terminal_token(coderd: CoderEmulator, session: str, agent_id: str, url: str) -> str:
    response = httpx.post(
        f"{coderd.url}/api/v2/applications/reconnecting-pty-signed-token",
        headers={"Coder-Session-Token": session},
        json={"url": url, "agentID": agent_id},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["signed_token"])


def test_tcp_over_websocket(
    wsproxy: RunningProxy, coderd_v2: CoderEmulator, session: str, agent: dict[str, Any]
) -> None:
    assert agent["port_protocols"] == {"8080": "http", "22": "tcp"}
    base = f"ws://127.0.0.1:{wsproxy.port}/api/v2/workspaceagents/{agent['agent_id']}/tcp"
    token = terminal_token(coderd_v2, session, agent["agent_id"], f"{base}?port=22")

    def url(port: str, signed: str = token) -> str:
        return f"{base}?port={port}&coder_signed_app_token_23db1dde={signed}"

    async def receive_exactly(ws: Any, size: int) -> bytes:
        received = b""
        while len(received) < size:
            message = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(message, bytes), "TCP bytes come back in binary frames"
            received += message
        assert len(received) == size
        return received

    async def refused(target: str) -> int:
        with pytest.raises(InvalidStatus) as error:
            async with ws_connect(target):
                pass
        return int(error.value.response.status_code)

    async def scenario() -> None:
        async with ws_connect(url("22"), max_size=None) as ws:
            await ws.send(b"SSH-2.0-probe\r\n")
            assert await receive_exactly(ws, 15) == b"SSH-2.0-probe\r\n"
            payload = bytes(range(256)) * 12_288  # 3 MiB in one frame
            await ws.send(payload)
            assert await receive_exactly(ws, len(payload)) == payload
            # A fragmented message is one stream of bytes; a ping gets its pong.
            await ws.send([b"frag", b"mented"])
            assert await receive_exactly(ws, 10) == b"fragmented"
            await asyncio.wait_for(await ws.ping(), 5)
            await ws.close()
            assert ws.close_code == 1000
        # The same token again (the proxy's cached path) opens a second tunnel.
        async with ws_connect(url("022")) as again:
            await again.send(b"again")
            assert await receive_exactly(again, 5) == b"again"
        # Refused: a port the agent does not declare as TCP, a port it does not have,
        # no token, a token signed with another key, and no port at all.
        assert await refused(url("8080")) == 404
        assert await refused(url("2222")) == 404
        assert await refused(f"{base}?port=22") == 401
        real_key = real_app_key(coderd_v2)
        forged_key = CryptoKey(
            feature="workspace_apps_token",
            secret="ab" * 64,
            sequence=real_key.sequence,
            starts_at=datetime.now(UTC),
        )

        def signed(key: CryptoKey, access_method: str, slug: str = "") -> str:
            request = AppRequest(
                access_method=access_method,  # type: ignore[arg-type]
                base_path="/",
                username_or_id=OWNER,
                workspace_name_or_id=WORKSPACE,
                agent_name_or_id="main",
                app_slug_or_port=slug,
            )
            return sign_app_token(
                key=key,
                request=request,
                user_id="u",
                username=OWNER,
                workspace_id=agent["workspace_id"],
                agent_id=agent["agent_id"],
            )

        assert await refused(url("22", signed(forged_key, "terminal"))) == 401
        # A genuine token for the port as a web app is not a terminal token.
        assert await refused(url("22", signed(real_key, "subdomain", "22"))) == 401
        assert await refused(f"{base}?coder_signed_app_token_23db1dde={token}") == 400

    asyncio.run(scenario())
    # Only a websocket is tunnelled.
    plain = httpx.get(url("22").replace("ws://", "http://", 1))
    assert plain.status_code == 400
    # An upgrade that is not a valid websocket handshake (no key) is refused, not tunnelled.
    target = url("22").removeprefix(f"ws://127.0.0.1:{wsproxy.port}")
    no_key = raw_exchange(
        wsproxy.port,
        f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode(),
    )
    assert no_key.startswith(b"HTTP/1.1 400")


# -- hardening --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /healthz HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ],
)
def test_smuggling_shapes_get_400_and_the_connection_closes(
    wsproxy: RunningProxy, request_bytes: bytes
) -> None:
    answer = raw_exchange(wsproxy.port, request_bytes + b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    assert answer.count(b"HTTP/1.1 ") == 1  # nothing after the rejection is served


def test_oversize_heads_are_rejected(wsproxy: RunningProxy) -> None:
    long_target = b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    assert raw_exchange(wsproxy.port, long_target).startswith(b"HTTP/1.1 414 ")
    big_header = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 40_000 + b"\r\n\r\n"
    assert raw_exchange(wsproxy.port, big_header).startswith(b"HTTP/1.1 431 ")
    many = (
        b"GET / HTTP/1.1\r\nHost: h\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(150))
        + b"\r\n"
    )
    assert raw_exchange(wsproxy.port, many).startswith(b"HTTP/1.1 431 ")


def test_a_slow_client_is_cut_off(wsproxy: RunningProxy) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", wsproxy.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: h\r\n")
        answer = b""
        try:
            for _ in range(20):
                time.sleep(0.2)
                sock.sendall(b"X-Slow: 1\r\n")  # a trickle, never the end of the head
        except (BrokenPipeError, ConnectionResetError):
            pass
        with pytest.raises(OSError):
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionResetError
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 4  # header timeout 1 s, checked every second


def test_upstream_refused_is_502_without_detail(
    coderd_v2: CoderEmulator, proxy_factory: ProxyFactory
) -> None:
    # A satellite pointed at a closed port: the primary is unreachable.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    proxy = proxy_factory(
        {
            "CODER_PRIMARY_ACCESS_URL": f"http://127.0.0.1:{port}",
            "CODER_PROXY_MODE": "satellite",
            "CODER_PROXY_SATELLITE_KEY_FILE": str(Path(proxy_dir(coderd_v2)) / f"k{port}.pem"),
        }
    )
    response = httpx.get(f"{proxy.url}/api/v0/users/me")
    assert response.status_code == 502
    assert str(port) not in response.text and "refused" not in response.text.lower()


def proxy_dir(coderd: CoderEmulator) -> Path:
    return coderd.state_dir.parent


# -- TLS ----------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls_with_cert_files(
    coderd_v2: CoderEmulator,
    proxy_factory: ProxyFactory,
    tmp_path: Path,
    session: str,
    agent: dict[str, Any],
) -> None:
    cert, key = self_signed(tmp_path)
    _name, token = create_wsproxy(coderd_v2)
    proxy = proxy_factory(
        proxy_env(
            coderd_v2,
            token,
            CODER_TLS_ENABLE="true",
            CODER_TLS_CERT_FILE=str(cert),
            CODER_TLS_KEY_FILE=str(key),
        ),
        tls_verify=ssl.create_default_context(cafile=str(cert)),
    )
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client:
        assert client.get(f"{proxy.url}/healthz").text == "OK"
        app = client.get(
            f"{proxy.url}/tls",
            headers=with_cookies(app_host("code-server"), session_cookie(session)),
        )
        assert app.status_code == 200 and app.json()["headers"]["X-Forwarded-Proto"] == "https"
