"""The emulator itself: agent backends, command line, config errors, admin endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.fixtures.coderd import CoderEmulator, EmulatorFactory

pytestmark = pytest.mark.integration
PATTERN = b"0123456789abcdef"


def agent_of(emulator: CoderEmulator, workspace: str) -> dict[str, object]:
    return next(a for a in emulator.agents() if a["workspace_name"] == workspace)


def test_default_seed_has_one_test_workspace_per_region(coderd_v1: CoderEmulator) -> None:
    agents = coderd_v1.agents()
    assert sorted(a["workspace_name"] for a in agents) == [
        "migration-check-ap-southeast",
        "migration-check-eu-west",
        "migration-check-us-east",
    ]
    assert {a["owner"] for a in agents} == {"platform-bot"}
    for agent in agents:
        assert set(agent["apps"]) == {"code-server"}
        assert set(agent["ports"]) == {"8080", "22"}
        assert agent["port_protocols"] == {"8080": "http", "22": "tcp"}
        assert str(agent["pty_url"]).startswith("ws://127.0.0.1:")


def test_configured_regions_and_workspaces(coderd_factory: Callable[..., CoderEmulator]) -> None:
    emulator = coderd_factory(
        "v1.21",
        config={
            "regions": ["sa-east"],
            "users": [{"username": "dev", "email": "dev@example.com"}],
            "workspaces": [
                {
                    "name": "dev-box",
                    "owner": "dev",
                    "provider": "sa-east",
                    "agents": [{"name": "main", "apps": [{"slug": "jupyter"}], "ports": []}],
                }
            ],
        },
    )
    agents = emulator.agents()
    assert [(a["workspace_name"], a["owner"], list(a["apps"])) for a in agents] == [
        ("dev-box", "dev", ["jupyter"])
    ]
    providers = emulator.admin("GET", "/api/private/resource-pools").json()["kubernetes"]
    assert [(p["name"], p["enable_net_v2"], p["status"]) for p in providers] == [
        ("sa-east", False, "ready")
    ]


def test_echo_app_streams_large_uploads_and_downloads(coderd_v2: CoderEmulator) -> None:
    agent = agent_of(coderd_v2, "migration-check-us-east")
    app_url = agent["apps"]["code-server"]  # type: ignore[index]
    size = 8 * 1024 * 1024 + 3
    payload = bytes(range(256)) * (size // 256) + b"xyz"

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 1 << 20):
            yield payload[start : start + (1 << 20)]

    async def action() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            upload = await http.put(f"{app_url}/upload?x=1", content=body())
            assert upload.json()["body_bytes"] == size
            assert upload.json()["body_sha256"] == hashlib.sha256(payload).hexdigest()
            assert upload.json()["query"] == "x=1"
            async with http.stream("GET", f"{app_url}/bytes/5000001?chunk=70000") as download:
                assert "content-length" not in download.headers
                received = b"".join([chunk async for chunk in download.aiter_bytes()])
        assert len(received) == 5000001
        expected = PATTERN * (5000001 // 16 + 1)
        assert received == expected[:5000001]

    asyncio.run(action())


def test_websocket_echo_pty_and_tcp_port(coderd_v2: CoderEmulator) -> None:
    agent = agent_of(coderd_v2, "migration-check-eu-west")
    http_address = agent["ports"]["8080"]  # type: ignore[index]
    tcp_host, tcp_port = str(agent["ports"]["22"]).split(":")  # type: ignore[index]

    async def action() -> None:
        async with connect(f"ws://{http_address}/ws/echo") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
        async with connect(str(agent["pty_url"])) as pty:
            assert await pty.recv() == b"coder-emulator pty main\r\n$ "
            await pty.send(json.dumps({"data": "ls\r", "height": 24, "width": 80}))
            assert await pty.recv() == b"ls\r\n$ "
            await pty.send(json.dumps({"data": "exit\r"}))
            assert await pty.recv() == b"exit\r\n"
        reader, writer = await asyncio.open_connection(tcp_host, int(tcp_port))
        writer.write(b"ping\n")
        await writer.drain()
        assert await reader.readexactly(5) == b"ping\n"
        writer.close()
        await writer.wait_closed()

    asyncio.run(action())


def test_admin_endpoints_need_the_admin_token(coderd_v1: CoderEmulator) -> None:
    user_token = coderd_v1.user_token("platform-bot")
    for token in ("", user_token):
        response = httpx.post(
            f"{coderd_v1.url}/emulator/faults",
            json={"kind": "status"},
            headers={"Session-Token": token},
        )
        assert response.status_code == 401
    assert coderd_v1.faults() == []
    bad = coderd_v1.admin("POST", "/emulator/faults", {"kind": "explode"})
    assert bad.status_code == 400 and "kind" in bad.json()["error"]["msg"]


def test_faults_are_off_by_default_and_removable(coderd_v1: CoderEmulator) -> None:
    assert coderd_v1.faults() == []
    rule_id = coderd_v1.add_fault(kind="status", status=500, path="/api/v0/orgs")
    assert coderd_v1.admin("GET", "/api/v0/orgs").status_code == 500
    assert coderd_v1.admin("DELETE", f"/emulator/faults/{rule_id}").status_code == 200
    assert coderd_v1.admin("GET", "/api/v0/orgs").status_code == 200


def _serve(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coder_migrate.lab.coderd", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_refuses_a_non_loopback_listen_address(tmp_path: Path) -> None:
    result = _serve(
        [
            "--listen",
            "0.0.0.0:18080",
            "--state-dir",
            str(tmp_path / "s"),
            "--mode",
            "v2",
            "--token-file",
            str(tmp_path / "t"),
        ]
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        == "error: --listen: the emulator listens on loopback only, found 0.0.0.0"
    )
    assert not (tmp_path / "s").exists()


def test_bad_config_is_one_line_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "emulator.yaml"
    config.write_text("workspaces:\n  - name: x\n    agents:\n      - ports: [{port: 99999}]\n")
    result = _serve(
        [
            "--listen",
            "127.0.0.1:18081",
            "--state-dir",
            str(tmp_path / "s"),
            "--mode",
            "v1.21",
            "--token-file",
            str(tmp_path / "t"),
            "--config",
            str(config),
        ]
    )
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    # errors.redact masks long paths (40+ path characters), so only the suffix is asserted.
    assert ".yaml: workspaces.0.agents.0.ports.0.port: Input should be less than" in lines[0]
    assert not (tmp_path / "t").exists()


def test_busy_port_is_reported(coderd_v1: CoderEmulator, tmp_path: Path) -> None:
    result = _serve(
        [
            "--listen",
            f"127.0.0.1:{coderd_v1.port}",
            "--state-dir",
            str(tmp_path / "s"),
            "--mode",
            "v1.21",
            "--token-file",
            str(tmp_path / "t"),
        ]
    )
    assert result.returncode == 4
    assert f"cannot listen on 127.0.0.1:{coderd_v1.port}" in result.stderr
    assert not (tmp_path / "s").exists() and not (tmp_path / "t").exists()


def test_an_envproxy_finds_the_workspaces_of_its_own_provider_only(
    coderd_v1_20: CoderEmulator,
) -> None:
    """The envproxy contract (ASSUMED, docs/coder-emulator.md): the token the lab issued
    for a provider (what `coder providers create` prints) finds that provider's workspaces."""
    issued = coderd_v1_20.admin("POST", "/emulator/providers/us-east/envproxy-token")
    assert issued.status_code == 201
    token = issued.json()["envproxy_token"]
    lookup = f"{coderd_v1_20.url}/api/private/envproxy/workspaces"

    def find(name: str, envproxy_token: str) -> httpx.Response:
        return httpx.get(lookup, params={"owner": "platform-bot", "name": name},
                         headers={"Envproxy-Token": envproxy_token}, timeout=5)

    found = find("migration-check-us-east", token)
    assert found.status_code == 200
    address = found.json()
    assert (address["workspace_name"], address["owner"]) == ("migration-check-us-east",
                                                             "platform-bot")
    by_id = httpx.get(f"{lookup}/{address['workspace_id']}", timeout=5,
                      headers={"Envproxy-Token": token})
    assert by_id.json()["agent_id"] == address["agent_id"]
    assert find("migration-check-eu-west", token).status_code == 404  # another provider's
    assert find("migration-check-us-east", "forged").status_code == 401
    # A new token replaces the old one.
    coderd_v1_20.admin("POST", "/emulator/providers/us-east/envproxy-token")
    assert find("migration-check-us-east", token).status_code == 401


def test_playing_another_release_restarts_on_the_same_state_without_refusing_requests(
    coderd_factory: EmulatorFactory,
) -> None:
    """PUT /emulator/release (docs/coder-emulator.md "Following the primary's release"): the
    restart keeps the state and the listening socket; requests during it wait and are
    answered, by the old or the new version, never refused."""
    emulator = coderd_factory("v1.21")
    session = emulator.user_token("platform-bot")
    assert emulator.admin("PUT", "/emulator/release", {"version": "1.21.0"}).status_code == 200
    for refused in ("1.19.0", "v2.15.0", ""):
        answer = emulator.admin("PUT", "/emulator/release", {"version": refused})
        assert answer.status_code == 400, refused
    restarting = emulator.admin("PUT", "/emulator/release", {"version": "1.20.0"})
    assert restarting.status_code == 202
    assert restarting.json() == {"mode": "v1.20", "version": "1.20.0", "restarting": True}
    seen: list[str] = []
    closed_unanswered = 0
    # A new connection per request: the restart ends open connections, as a pod restart does.
    # A connection the old version accepted but had not read yet is closed unanswered (as a
    # keep-alive connection can be closed just as a request is sent on it); the toolkit's
    # transport retries idempotent requests after both. What must hold is that the listening
    # socket never refuses (httpx.ConnectError fails the test) and the next try is answered.
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        deadline = time.monotonic() + 15
        while (not seen or seen[-1] != "1.20.0") and time.monotonic() < deadline:
            try:
                me = client.get(f"{emulator.url}/api/v0/users/me",
                                headers={"Session-Token": session})
            except httpx.RemoteProtocolError:
                closed_unanswered += 1
                continue
            assert me.status_code == 200 and me.json()["username"] == "platform-bot"
            seen.append(me.headers["coder-version"])
    assert seen[-1] == "1.20.0" and set(seen) <= {"1.21.0", "1.20.0"}
    # One restart, one client asking one request at a time: at most the connection the old
    # version had accepted when it stopped.
    assert closed_unanswered <= 1
    assert emulator.admin("GET", "/emulator/state").json()["mode"] == "v1.20"
