"""CoderV2Client and CoderV2ProxyClient against the emulator playing a v2 primary."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import pytest

from coder_migrate.errors import (
    CoderAPIError,
    CoderAuthError,
    CoderConflict,
    CoderNotFound,
    CoderUnavailable,
    CoderUnsupported,
)
from coder_migrate.providers.coder import (
    CoderV2Client,
    CoderV2ProxyClient,
    RetryPolicy,
    signed_token_from,
)
from coder_migrate.providers.coder.app_tokens import (
    API_KEY_QUERY_PARAMETER,
    decrypt_api_key,
    verify_app_token,
)
from tests.fixtures.coderd import CoderEmulator

pytestmark = pytest.mark.integration

T = TypeVar("T")
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
TOKEN_SHAPE = re.compile(r"^([0-9a-f-]{36}):([0-9a-f]{64})$")
PREMIUM = "Workspace Proxy is a Premium feature. Contact sales!"
ICON = "/emojis/1f1ea-1f1fa.png"


def run_with(
    emulator: CoderEmulator,
    action: Callable[[CoderV2Client], Awaitable[T]],
    *,
    token: str | None = None,
    **options: Any,
) -> T:
    async def main() -> T:
        options.setdefault("retry", FAST_RETRY)
        async with CoderV2Client(
            emulator.url, emulator.admin_token if token is None else token, **options
        ) as client:
            return await action(client)

    return asyncio.run(main())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def registration(access_url: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "access_url": access_url,
        "wildcard_hostname": "*.proxy.lab.internal",
        "derp_enabled": True,
        "derp_only": False,
        "replica_id": str(uuid.uuid4()),
        "hostname": "proxy-0",
        "replica_error": "",
        "replica_relay_address": "http://127.0.0.1:1",
        "version": "v2.25.0",
    }
    body.update(overrides)
    return body


class FakeProxyHealth:
    """A real loopback HTTP server answering ``/healthz-report`` as told."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b'{"errors":[],"warnings":[]}'
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def report(self, errors: list[str], warnings: list[str]) -> None:
        self.status = 200
        self.body = json.dumps({"errors": errors, "warnings": warnings}).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_proxy() -> Iterator[FakeProxyHealth]:
    server = FakeProxyHealth()
    yield server
    server.close()


def test_buildinfo_and_me(coderd_v2: CoderEmulator) -> None:
    async def action(client: CoderV2Client) -> tuple[Any, Any]:
        return await client.buildinfo(), await client.me()

    info, me = run_with(coderd_v2, action)
    assert info.version.startswith("v2.")
    assert info.workspace_proxy is False
    assert me.username == "admin" and [r.name for r in me.roles] == ["owner"]


def test_bad_session_token_is_an_auth_error(coderd_v2: CoderEmulator) -> None:
    with pytest.raises(CoderAuthError) as caught:
        run_with(coderd_v2, lambda c: c.list_proxies(), token="abcdef0123-zzzzzzzzzzzzzzzzzzzzzz")
    assert (caught.value.method, caught.value.path, caught.value.status) == (
        "GET",
        "/api/v2/workspaceproxies",
        401,
    )


def test_create_returns_a_token_once_in_the_documented_format(coderd_v2: CoderEmulator) -> None:
    name = unique("create")
    created = run_with(coderd_v2, lambda c: c.create_proxy(name, display_name="Create test"))
    match = TOKEN_SHAPE.match(created.proxy_token.get_secret_value())
    assert match is not None and match.group(1) == created.proxy.id
    assert "**" in repr(created.proxy_token)
    proxy = created.proxy
    assert (proxy.name, proxy.display_name, proxy.path_app_url) == (name, "Create test", "")
    assert (proxy.derp_enabled, proxy.derp_only, proxy.status.status) == (
        True,
        False,
        "unregistered",
    )
    again = run_with(coderd_v2, lambda c: c.get_proxy(proxy.id))
    assert again.name == name  # the token is not part of a read


def test_list_get_and_soft_delete(coderd_v2: CoderEmulator) -> None:
    name = unique("listing")

    async def action(client: CoderV2Client) -> None:
        created = (await client.create_proxy(name)).proxy
        listed = await client.list_proxies()
        assert listed[0].name == "primary" and listed[0].status.status == "ok"
        assert name in [p.name for p in listed]
        assert (await client.get_proxy(name)).id == created.id
        assert (await client.get_proxy("primary")).name == "primary"
        assert await client.find_proxy(name) is not None
        await client.delete_proxy(name)
        assert name not in [p.name for p in await client.list_proxies()]
        assert (await client.get_proxy(created.id)).deleted is True
        with pytest.raises(CoderNotFound):
            await client.get_proxy(name)
        assert await client.find_proxy(name) is None
        with pytest.raises(CoderNotFound):
            await client.delete_proxy(name)

    run_with(coderd_v2, action)


@pytest.mark.parametrize("name", ["primary", "Primary", "PRIMARY"])
def test_primary_is_a_reserved_name(coderd_v2: CoderEmulator, name: str) -> None:
    with pytest.raises(CoderAPIError) as caught:
        run_with(coderd_v2, lambda c: c.create_proxy(name))
    assert caught.value.status == 400
    assert "reserved" in str(caught.value)


def test_duplicate_proxy_name_is_a_conflict(coderd_v2: CoderEmulator) -> None:
    name = unique("dup")
    run_with(coderd_v2, lambda c: c.create_proxy(name))
    with pytest.raises(CoderConflict) as caught:
        run_with(coderd_v2, lambda c: c.create_proxy(name))
    assert (caught.value.method, caught.value.path, caught.value.status) == (
        "POST",
        "/api/v2/workspaceproxies",
        409,
    )


def test_primary_cannot_be_renamed_or_deleted(coderd_v2: CoderEmulator) -> None:
    with pytest.raises(CoderAPIError) as renamed:
        run_with(coderd_v2, lambda c: c.update_proxy("primary", name="main"))
    with pytest.raises(CoderAPIError) as deleted:
        run_with(coderd_v2, lambda c: c.delete_proxy("primary"))
    assert renamed.value.status == deleted.value.status == 400


def test_patch_renames_and_regenerates_the_token(coderd_v2: CoderEmulator) -> None:
    name, new_name = unique("patch"), unique("renamed")

    async def action(client: CoderV2Client) -> None:
        created = await client.create_proxy(name, display_name="Patch", icon=ICON)
        old_token = created.proxy_token.get_secret_value()
        plain = await client.update_proxy(name, name=new_name, display_name="Renamed")
        assert (plain.proxy.name, plain.proxy.display_name) == (new_name, "Renamed")
        assert plain.proxy_token.get_secret_value() == ""
        fresh = await client.regenerate_proxy_token(new_name)
        new_token = fresh.proxy_token.get_secret_value()
        assert TOKEN_SHAPE.match(new_token) and new_token != old_token
        async with CoderV2ProxyClient(coderd_v2.url, old_token, retry=FAST_RETRY) as proxy:
            with pytest.raises(CoderAuthError, match="Invalid proxy token secret"):
                await proxy.crypto_keys()
        async with CoderV2ProxyClient(coderd_v2.url, new_token, retry=FAST_RETRY) as proxy:
            assert await proxy.crypto_keys()
        other = unique("other")
        await client.create_proxy(other)
        # patchWorkspaceProxy does not handle the unique index: real Coder answers 500.
        with pytest.raises(CoderUnavailable, match="duplicate key value"):
            await client.update_proxy(new_name, name=other)

    run_with(coderd_v2, action)


def test_regions_leave_out_deleted_proxies(coderd_v2: CoderEmulator) -> None:
    kept, gone = unique("kept"), unique("gone")

    async def action(client: CoderV2Client) -> list[str]:
        await client.create_proxy(kept)
        await client.create_proxy(gone)
        await client.delete_proxy(gone)
        return [r.name for r in await client.list_regions()]

    names = run_with(coderd_v2, action)
    assert names[0] == "primary" and kept in names and gone not in names


def test_proxy_token_rules(coderd_v2: CoderEmulator) -> None:
    async def action(client: CoderV2Client) -> None:
        created = await client.create_proxy(unique("tokens"))
        token = created.proxy_token.get_secret_value()
        async with httpx.AsyncClient() as http:
            missing = await http.get(f"{coderd_v2.url}/api/v2/workspaceproxies/me/crypto-keys")
        assert missing.status_code == 401
        assert missing.json()["message"] == "Missing required external proxy token"
        for bad, detail in [
            (f"{uuid.uuid4()}:{'0' * 64}", "not found"),
            (token[:-1] + ("0" if token[-1] != "0" else "1"), "Invalid proxy token secret"),
        ]:
            async with CoderV2ProxyClient(coderd_v2.url, bad, retry=FAST_RETRY) as proxy:
                with pytest.raises(CoderAuthError, match=detail):
                    await proxy.crypto_keys()
        await client.delete_proxy(created.proxy.id)
        async with CoderV2ProxyClient(coderd_v2.url, token, retry=FAST_RETRY) as proxy:
            with pytest.raises(CoderAuthError, match="deleted"):
                await proxy.crypto_keys()

    run_with(coderd_v2, action)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"access_url": "ftp://proxy.example.com"}, "Access URL"),
        ({"access_url": "https://proxy.example.com/sub"}, "Access URL"),
        ({"wildcard_hostname": "proxy.example.com"}, "Wildcard"),
        ({"replica_id": "00000000-0000-0000-0000-000000000000"}, "Replica ID"),
        ({"replica_id": ""}, "Replica ID"),
        ({"derp_enabled": False, "derp_only": True}, "DerpOnly"),
    ],
)
def test_register_validation(
    coderd_v2: CoderEmulator, overrides: dict[str, Any], message: str
) -> None:
    async def action(client: CoderV2Client) -> None:
        token = (await client.create_proxy(unique("reg"))).proxy_token.get_secret_value()
        async with CoderV2ProxyClient(coderd_v2.url, token, retry=FAST_RETRY) as proxy:
            with pytest.raises(CoderAPIError, match=message) as caught:
                await proxy.register({**registration("https://proxy.example.com"), **overrides})
        assert caught.value.status == 400

    run_with(coderd_v2, action)


def test_register_deregister_and_health(
    coderd_v2: CoderEmulator, fake_proxy: FakeProxyHealth
) -> None:
    name = unique("healthy")

    async def action(client: CoderV2Client) -> None:
        created = await client.create_proxy(name)
        token = created.proxy_token.get_secret_value()
        async with CoderV2ProxyClient(coderd_v2.url, token, retry=FAST_RETRY) as proxy:
            first = registration(fake_proxy.url + "/")
            answer = await proxy.register(first)
            assert len(answer.derp_mesh_key.get_secret_value()) == 64
            assert answer.derp_region_id >= 1 and answer.sibling_replicas == []
            assert "Regions" in answer.derp_map
            second = await proxy.register(registration(fake_proxy.url, hostname="proxy-1"))
            assert [r["id"] for r in second.sibling_replicas] == [first["replica_id"]]
            await proxy.deregister(first["replica_id"])

        statuses = coderd_v2.health_check()
        assert statuses[name]["status"] == "ok"
        registered = await client.get_proxy(name)
        assert registered.path_app_url == fake_proxy.url
        assert registered.wildcard_hostname == "*.proxy.lab.internal"
        assert registered.healthy is True and registered.status.checked_at is not None

        fake_proxy.report([], ["version mismatch"])
        coderd_v2.health_check()
        status = await client.proxy_status(name)
        assert (status.status, status.report.warnings) == ("ok", ["version mismatch"])

        fake_proxy.report(["primary buildinfo failed"], [])
        coderd_v2.health_check()
        status = await client.proxy_status(name)
        assert (status.status, status.report.errors) == ("unhealthy", ["primary buildinfo failed"])
        assert (await client.get_proxy(name)).healthy is False

        fake_proxy.status, fake_proxy.body = 500, b'{"errors":[],"warnings":[]}'
        coderd_v2.health_check()
        assert (await client.proxy_status(name)).status == "unhealthy"

        fake_proxy.status, fake_proxy.body = 200, b"<html>not json</html>"
        coderd_v2.health_check()
        assert (await client.proxy_status(name)).status == "unhealthy"

        fake_proxy.close()
        coderd_v2.health_check()
        assert (await client.proxy_status(name)).status == "unreachable"

        never = (await client.create_proxy(unique("never"))).proxy
        coderd_v2.health_check()
        assert (await client.proxy_status(never.id)).status == "unregistered"

    run_with(coderd_v2, action)


def test_health_poller_runs_on_its_interval(
    coderd_factory: Callable[..., CoderEmulator], fake_proxy: FakeProxyHealth
) -> None:
    emulator = coderd_factory("v2", config={"health_interval_seconds": 0.3})
    name = unique("interval")

    async def action(client: CoderV2Client) -> str:
        token = (await client.create_proxy(name)).proxy_token.get_secret_value()
        async with CoderV2ProxyClient(emulator.url, token, retry=FAST_RETRY) as proxy:
            await proxy.register(registration(fake_proxy.url))
        fake_proxy.report(["broken"], [])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = (await client.proxy_status(name)).status
            if status == "unhealthy":
                return status
            await asyncio.sleep(0.1)
        return status

    assert run_with(emulator, action) == "unhealthy"
    assert emulator.set_config(health_interval_seconds=5)["health_interval_seconds"] == 5


def test_crypto_keys_signed_app_tokens_and_agent_addresses(coderd_v2: CoderEmulator) -> None:
    agent = next(a for a in coderd_v2.agents() if a["workspace_name"] == "migration-check-eu-west")
    user_token = coderd_v2.user_token("platform-bot")

    async def action(client: CoderV2Client) -> None:
        token = (await client.create_proxy(unique("apps"))).proxy_token.get_secret_value()
        async with CoderV2ProxyClient(coderd_v2.url, token, retry=FAST_RETRY) as proxy:
            keys = await proxy.crypto_keys("workspace_apps_token")
            api_keys = await proxy.crypto_keys("workspace_apps_api_key")
            assert [k.feature for k in keys] == ["workspace_apps_token"]
            assert len(keys[0].secret.get_secret_value()) == 128
            assert len(api_keys[0].secret.get_secret_value()) == 64
            with pytest.raises(CoderAPIError) as bad_feature:
                await proxy.crypto_keys("something_else")
            assert bad_feature.value.status == 400

            app_request = {
                "access_method": "subdomain",
                "base_path": "/",
                "username_or_id": "platform-bot",
                "workspace_name_or_id": "migration-check-eu-west",
                "agent_name_or_id": "main",
                "app_slug_or_port": "code-server",
            }
            payload = {
                "app_request": app_request,
                "path_app_base_url": coderd_v2.url,
                "app_hostname": "code-server--main--migration-check-eu-west--platform-bot.lab",
                "app_path": "/",
                "app_query": "",
                "session_token": user_token,
            }
            issued = await proxy.issue_signed_app_token(payload)
            claims = verify_app_token(signed_token_from(issued), keys)
            assert (claims.agent_id, claims.workspace_id, claims.username) == (
                agent["agent_id"],
                agent["workspace_id"],
                "platform-bot",
            )
            assert claims.app_url == agent["apps"]["code-server"]
            assert claims.exp - claims.iat == 60

            port_request = {**app_request, "app_slug_or_port": "8080"}
            by_port = await proxy.issue_signed_app_token({**payload, "app_request": port_request})
            port_claims = verify_app_token(signed_token_from(by_port), keys)
            assert port_claims.app_url == f"http://{agent['ports']['8080']}"

            anonymous = await proxy.issue_signed_app_token({**payload, "session_token": ""})
            assert anonymous.status_code == 303
            assert (
                "/api/v2/applications/auth-redirect?redirect_uri=" in anonymous.headers["location"]
            )
            missing = await proxy.issue_signed_app_token(
                {**payload, "app_request": {**app_request, "app_slug_or_port": "nope"}}
            )
            assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]

            address = await proxy.agent_address(agent["agent_id"])
            assert address.model_dump() == agent
            by_names = await proxy.find_agent_address("platform-bot", "migration-check-eu-west")
            assert by_names == address
            with pytest.raises(CoderNotFound):
                await proxy.agent_address(str(uuid.uuid4()))
            await proxy.report_app_stats([])

    run_with(coderd_v2, action)


@pytest.mark.parametrize(
    ("user", "access_method", "expected"),
    [
        ("platform-bot", "path", 201),  # the workspace's owner
        ("platform-bot", "subdomain", 201),
        ("mallory", "path", 404),  # a member, not the owner
        ("mallory", "subdomain", 404),
        ("admin", "subdomain", 201),  # a site owner may open others' subdomain apps ...
        ("admin", "path", 404),  # ... never their path apps (no dangerous flag)
    ],
)
def test_who_gets_an_app_token_of_another_users_workspace(
    coderd_factory: Callable[..., CoderEmulator], user: str, access_method: str, expected: int
) -> None:
    """coder/coder coderd/workspaceapps/db.go at 020b4b51 ``authorizeRequest``: lines
    199-201 force path apps to sharing level "owner", 217-222 refuse another user's path app
    unless ``--dangerous-allow-path-app-site-owner-access``, 245-248 RBAC (a site owner may
    connect to any workspace); lines 119-123: a signed-in user refused gets
    ``WriteWorkspaceApp404`` (errors.go at 0ee4ac73, lines 33-36: 404 "Application Not
    Found", the page a workspace that does not exist gets too)."""
    emulator = coderd_factory("v2", config={"users": [{"username": "mallory"}]})
    session = emulator.user_token(user)

    async def action(client: CoderV2Client) -> httpx.Response:
        token = (await client.create_proxy("authz")).proxy_token.get_secret_value()
        async with CoderV2ProxyClient(emulator.url, token, retry=FAST_RETRY) as proxy:
            return await proxy.issue_signed_app_token(
                {
                    "app_request": {
                        "access_method": access_method,
                        "base_path": "/@platform-bot/migration-check-us-east/apps/code-server/"
                        if access_method == "path" else "/",
                        "username_or_id": "platform-bot",
                        "workspace_name_or_id": "migration-check-us-east",
                        "app_slug_or_port": "code-server",
                    },
                    "session_token": session,
                }
            )

    response = run_with(emulator, action)
    assert response.status_code == expected
    if expected == 404:
        assert "Application Not Found" in response.text
        assert "does not exist or you do not have permission" in response.text


def test_terminal_token(coderd_v2: CoderEmulator) -> None:
    agent = coderd_v2.agents()[0]
    user_token = coderd_v2.user_token("platform-bot")
    response = httpx.post(
        f"{coderd_v2.url}/api/v2/applications/reconnecting-pty-signed-token",
        json={
            "url": f"wss://proxy.lab/api/v2/workspaceagents/{agent['agent_id']}/pty",
            "agentID": agent["agent_id"],
        },
        headers={"Coder-Session-Token": user_token},
    )
    assert response.status_code == 200
    keys_proxy = run_with(coderd_v2, lambda c: c.create_proxy(unique("pty")))

    async def keys() -> Any:
        async with CoderV2ProxyClient(
            coderd_v2.url, keys_proxy.proxy_token.get_secret_value()
        ) as proxy:
            return await proxy.crypto_keys()

    claims = verify_app_token(response.json()["signed_token"], asyncio.run(keys()))
    assert claims.request.access_method == "terminal" and claims.agent_id == agent["agent_id"]


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.list_proxies(),
        lambda c: c.get_proxy("anything"),
        lambda c: c.create_proxy("eu-west"),
        lambda c: c.delete_proxy("eu-west"),
    ],
)
def test_unlicensed_primary_says_premium(
    coderd_v2_unlicensed: CoderEmulator, call: Callable[[CoderV2Client], Awaitable[Any]]
) -> None:
    with pytest.raises(CoderUnsupported) as caught:
        run_with(coderd_v2_unlicensed, call)
    assert caught.value.status == 403
    assert PREMIUM in str(caught.value)


def test_unlicensed_primary_still_serves_buildinfo_and_regions(
    coderd_v2_unlicensed: CoderEmulator,
) -> None:
    async def action(client: CoderV2Client) -> tuple[Any, Any]:
        return await client.buildinfo(), await client.list_regions()

    info, regions = run_with(coderd_v2_unlicensed, action)
    assert info.workspace_proxy is False
    assert [r.name for r in regions] == ["primary"]


def test_v2_retries_through_503s_and_dropped_connections(coderd_v2: CoderEmulator) -> None:
    coderd_v2.add_fault(
        kind="status", status=502, path="/api/v2/workspaceproxies", method="GET", count=1
    )
    coderd_v2.add_fault(kind="drop", path="/api/v2/workspaceproxies", method="GET", count=1)
    proxies = run_with(coderd_v2, lambda c: c.list_proxies())
    assert proxies[0].name == "primary"
    assert coderd_v2.faults() == []


def test_v2_create_is_not_retried_after_a_dropped_connection(coderd_v2: CoderEmulator) -> None:
    name = unique("dropped")
    coderd_v2.add_fault(kind="drop", path="/api/v2/workspaceproxies", method="POST", count=2)
    with pytest.raises(CoderUnavailable):
        run_with(coderd_v2, lambda c: c.create_proxy(name))
    assert [f["count"] for f in coderd_v2.faults()] == [1]


def test_v2_exhausted_retries_are_unavailable(coderd_v2: CoderEmulator) -> None:
    coderd_v2.add_fault(kind="status", status=504, path="/api/v2/buildinfo")
    with pytest.raises(CoderUnavailable) as caught:
        run_with(coderd_v2, lambda c: c.buildinfo())
    assert caught.value.status == 504


def test_unreachable_primary_is_unavailable() -> None:
    async def action() -> None:
        async with CoderV2Client(
            "http://127.0.0.1:9", "abcdef0123-tokentokentokentoken", retry=FAST_RETRY, timeout=2
        ) as client:
            await client.buildinfo()

    with pytest.raises(CoderUnavailable, match="could not reach the primary"):
        asyncio.run(action())


def test_auth_redirect_hands_a_session_to_a_proxy(coderd_v2: CoderEmulator) -> None:
    user_token = coderd_v2.user_token("platform-bot")
    wildcard = f"*.{unique('wild')}.lab.internal"
    app_host = wildcard.replace("*", "code-server--main--migration-check-us-east--platform-bot")

    async def action(client: CoderV2Client) -> None:
        token = (await client.create_proxy(unique("login"))).proxy_token.get_secret_value()
        async with CoderV2ProxyClient(coderd_v2.url, token, retry=FAST_RETRY) as proxy:
            await proxy.register(registration("http://127.0.0.1:9", wildcard_hostname=wildcard))
            api_keys = await proxy.crypto_keys("workspace_apps_api_key")
        async with httpx.AsyncClient(base_url=coderd_v2.url) as http:
            target = f"http://{app_host}/some/path?x=1"
            handed = await http.get(
                "/api/v2/applications/auth-redirect",
                params={"redirect_uri": target},
                headers={"Cookie": f"coder_session_token={user_token}"},
            )
            assert handed.status_code == 303
            location = httpx.URL(handed.headers["location"])
            assert (location.host, location.path, location.params["x"]) == (
                app_host,
                "/some/path",
                "1",
            )
            session = decrypt_api_key(location.params[API_KEY_QUERY_PARAMETER], api_keys)
            me = await http.get("/api/v2/users/me", headers={"Coder-Session-Token": session})
            assert me.json()["username"] == "platform-bot"

            anonymous = await http.get(
                "/api/v2/applications/auth-redirect", params={"redirect_uri": target}
            )
            assert anonymous.status_code == 303
            # httpmw.RedirectToLogin: message and redirect, encoded with sorted keys.
            login = httpx.URL(anonymous.headers["location"])
            assert str(login).startswith(f"{coderd_v2.url}/login?message=")
            assert login.params["redirect"].startswith("/api/v2/applications/auth-redirect?")
            elsewhere = await http.get(
                "/api/v2/applications/auth-redirect",
                params={"redirect_uri": "http://evil.example.com/"},
                headers={"Cookie": f"coder_session_token={user_token}"},
            )
            assert elsewhere.status_code == 400

    run_with(coderd_v2, action)
