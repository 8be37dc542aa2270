"""The bundled proxy as a Coder v1 satellite, and process-level behaviour (workers, CLI)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from coder_migrate.providers.coder import CoderV1Client, satellite_key
from tests.fixtures.coderd import CoderEmulator
from tests.fixtures.proxy import ProxyFactory

pytestmark = pytest.mark.integration


def satellite_env(primary: str, key_file: Path, **extra: str) -> dict[str, str]:
    return {
        "CODER_PRIMARY_ACCESS_URL": primary,
        "CODER_PROXY_MODE": "satellite",
        "CODER_PROXY_SATELLITE_KEY_FILE": str(key_file),
        **extra,
    }


def test_satellite_key_is_created_served_and_registers(
    coderd_v1: CoderEmulator, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    key_file = tmp_path / "satellite.key"
    proxy = proxy_factory(satellite_env(coderd_v1.url, key_file))
    assert key_file.stat().st_mode & 0o777 == 0o600
    served = httpx.get(f"{proxy.url}/api/private/satellites/key").json()
    assert served["key"] == satellite_key.public_key_pem(key_file.read_text())
    assert served["fingerprint"] == satellite_key.fingerprint(served["key"])

    async def register() -> Any:
        async with CoderV1Client(coderd_v1.url, coderd_v1.admin_token) as client:
            key = await client.fetch_satellite_key(proxy.url)
            return await client.create_satellite(f"sat-{proxy.port}", key.key)

    created = asyncio.run(register())
    assert created.fingerprint == served["fingerprint"]
    # Restarting keeps the same key (and so the same registration).
    proxy.stop()
    again = proxy_factory(satellite_env(coderd_v1.url, key_file))
    assert httpx.get(f"{again.url}/api/private/satellites/key").json() == served


def test_satellite_forwards_other_requests_to_the_primary(
    coderd_v1: CoderEmulator, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    proxy = proxy_factory(satellite_env(coderd_v1.url, tmp_path / "k.pem"))
    response = httpx.get(f"{proxy.url}/api", headers={"Session-Token": coderd_v1.admin_token})
    assert response.status_code == 200
    assert response.headers["coder-version"].startswith("1.21")
    refused = httpx.get(f"{proxy.url}/api/v0/users/me")
    assert refused.status_code == 401  # the primary's own answer, passed through


def test_forwarded_headers_and_hop_by_hop_stripping(
    coderd_v2: CoderEmulator, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    # An agent's echo server stands in for the primary so the forwarded request is visible.
    echo = next(iter(coderd_v2.agents()))["apps"]["code-server"]
    proxy = proxy_factory(satellite_env(echo, tmp_path / "k.pem"))
    response = httpx.get(
        f"{proxy.url}/api/v0/x?y=1",
        headers={
            "Host": "eu.example.com",
            "X-Forwarded-For": "6.6.6.6",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Cookie": "coder_session_token=kept-for-the-primary",
        },
    )
    assert response.status_code == 200, response.text
    seen = {k.lower(): v for k, v in response.json()["headers"].items()}
    assert seen["x-forwarded-for"] == "127.0.0.1"  # a client cannot spoof its address
    assert seen["x-forwarded-host"] == "eu.example.com"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["host"] == "eu.example.com"
    for hop in ("x-hop", "keep-alive", "te"):
        assert hop not in seen
    assert seen["cookie"] == "coder_session_token=kept-for-the-primary"
    assert response.json()["path"] == "/api/v0/x" and response.json()["query"] == "y=1"


def test_two_workers_share_the_port(
    coderd_v1: CoderEmulator, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    proxy = proxy_factory(satellite_env(coderd_v1.url, tmp_path / "k.pem", CODER_PROXY_WORKERS="2"))
    pids = set()
    for _ in range(40):
        with httpx.Client() as client:  # a new connection each time
            response = client.get(f"{proxy.url}/healthz")
            assert response.status_code == 200
    children = Path(f"/proc/{proxy.process.pid}/task/{proxy.process.pid}/children").read_text()
    pids.update(children.split())
    assert len(pids) == 1  # one forked worker besides the first
    time.sleep(1.5)  # the other worker's counters reach the first within a second
    metrics = httpx.get(f"http://127.0.0.1:{proxy.metrics_port}/metrics").text
    line = 'coderd_api_requests_processed_total{code="200",method="GET",path="/healthz"}'
    served = sum(float(row.split()[-1]) for row in metrics.splitlines() if row.startswith(line))
    assert served >= 40  # both workers' requests (the fixture's readiness probes add a few)
    assert proxy.stop() == 0
    assert not Path(f"/proc/{next(iter(pids))}").exists() or _is_zombie(next(iter(pids)))


def _is_zombie(pid: str) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" in status


def test_bad_settings_exit_non_zero_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_")}
    env.update(
        CODER_PRIMARY_ACCESS_URL="ftp://nowhere",
        CODER_PROXY_ENV_FILE=str(tmp_path / "empty.env"),
    )
    (tmp_path / "empty.env").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "coder_migrate.proxy"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "CODER_PRIMARY_ACCESS_URL (environment): expected an http(s) URL" in lines[0]


def test_shutdown_drains_in_flight_requests(
    coderd_v1: CoderEmulator, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    proxy = proxy_factory(
        satellite_env(coderd_v1.url, tmp_path / "k.pem", CODER_PROXY_DRAIN_TIMEOUT="10")
    )
    coderd_v1.add_fault(kind="latency", path="/api", method="GET", seconds=1.5, count=1)
    results: list[httpx.Response] = []

    def slow_request() -> None:
        results.append(
            httpx.get(
                f"{proxy.url}/api", headers={"Session-Token": coderd_v1.admin_token}, timeout=10
            )
        )

    worker = threading.Thread(target=slow_request)
    worker.start()
    time.sleep(0.5)  # the request is now waiting on the primary
    os.kill(proxy.process.pid, signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{proxy.url}/healthz", timeout=2)  # no new connections while draining
    worker.join(timeout=10)
    assert results and results[0].status_code == 200
    assert proxy.process.wait(timeout=10) == 0


def test_satellite_relays_apps_for_the_workspace_owner(
    coderd_v1: CoderEmulator, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    proxy = proxy_factory(
        satellite_env(
            coderd_v1.url, tmp_path / "k.pem", CODER_WILDCARD_ACCESS_URL="*.apps.eu.lab.internal"
        )
    )

    async def register() -> None:
        async with CoderV1Client(coderd_v1.url, coderd_v1.admin_token) as client:
            key = await client.fetch_satellite_key(proxy.url)
            await client.create_satellite(f"sat-apps-{proxy.port}", key.key)

    asyncio.run(register())
    host = "code-server--main--migration-check-us-east--platform-bot.apps.eu.lab.internal"
    anonymous = httpx.get(f"{proxy.url}/x", headers={"Host": host})
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith(f"{coderd_v1.url}/login?redirect=")
    session = coderd_v1.user_token("platform-bot")
    for _ in range(2):  # the second request is served from the caches
        response = httpx.get(
            f"{proxy.url}/x?y=1", headers={"Host": host, "Cookie": f"session_token={session}"}
        )
        assert response.status_code == 200, response.text
        echoed = response.json()
        assert echoed["path"] == "/x" and echoed["query"] == "y=1"
        assert session not in str(echoed["headers"])
    forged = httpx.get(f"{proxy.url}/x", headers={"Host": host, "Cookie": "session_token=forged"})
    assert forged.status_code == 303
    # A satellite tunnels no TCP, even for the owner (no terminal token in Coder v1).
    agents = coderd_v1.agents()
    agent_id = next(a["agent_id"] for a in agents if a["workspace_name"] in host)
    tunnel = httpx.get(
        f"{proxy.url}/api/v2/workspaceagents/{agent_id}/tcp?port=22",
        headers={
            "Cookie": f"session_token={session}",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    assert tunnel.status_code == 404


def test_slow_upstream_is_504_and_the_connection_cap_is_503(
    coderd_v1: CoderEmulator, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    proxy = proxy_factory(
        satellite_env(
            coderd_v1.url,
            tmp_path / "k.pem",
            CODER_PROXY_UPSTREAM_RESPONSE_TIMEOUT="1",
            CODER_PROXY_MAX_CONNECTIONS_PER_CLIENT="3",
        )
    )
    # Any path the satellite forwards (its own /cem-healthz it answers itself).
    coderd_v1.add_fault(kind="latency", path="/api/v0/orgs", seconds=4, count=1)
    started = time.monotonic()
    slow = httpx.get(f"{proxy.url}/api/v0/orgs", timeout=10)
    assert slow.status_code == 504
    assert time.monotonic() - started < 3.5
    assert "orgs" not in slow.text
    held = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as extra:
            assert extra.recv(100).startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"{proxy.url}/healthz").status_code == 200  # freed again
