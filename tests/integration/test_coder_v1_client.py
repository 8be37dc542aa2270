"""CoderV1Client against the emulator playing a real v1.21 / v1.20 primary."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
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
    CoderV1Client,
    CoderV1SatelliteClient,
    RetryPolicy,
    satellite_key,
)
from tests.fixtures.coderd import CoderEmulator

pytestmark = pytest.mark.integration

T = TypeVar("T")
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


def run_with(
    emulator: CoderEmulator,
    action: Callable[[CoderV1Client], Awaitable[T]],
    *,
    token: str | None = None,
    **options: Any,
) -> T:
    async def main() -> T:
        options.setdefault("retry", FAST_RETRY)
        async with CoderV1Client(
            emulator.url, emulator.admin_token if token is None else token, **options
        ) as client:
            return await action(client)

    return asyncio.run(main())


def test_version_is_read_from_the_coder_version_header(
    coderd_v1: CoderEmulator, coderd_v1_20: CoderEmulator
) -> None:
    new = run_with(coderd_v1, lambda c: c.version())
    old = run_with(coderd_v1_20, lambda c: c.version())
    assert (new.raw, new.major, new.minor, new.at_least(1, 21)) == ("1.21.0", 1, 21, True)
    assert (old.raw, old.at_least(1, 21)) == ("1.20.0", False)


def test_me_and_orgs(coderd_v1: CoderEmulator) -> None:
    async def action(client: CoderV1Client) -> tuple[Any, Any]:
        return await client.me(), await client.list_orgs()

    me, orgs = run_with(coderd_v1, action)
    assert me.username == "admin"
    assert "site-admin" in me.roles
    default = next(o for o in orgs if o.name == "default")
    assert {m["username"] for m in default.members} >= {"admin", "platform-bot"}


def test_bad_token_is_an_auth_error_naming_method_and_path(coderd_v1: CoderEmulator) -> None:
    with pytest.raises(CoderAuthError) as caught:
        run_with(coderd_v1, lambda c: c.me(), token="0123456789-abcdefghijklmnopqrstuv")
    error = caught.value
    assert (error.method, error.path, error.status, error.code) == (
        "GET",
        "/api/v0/users/me",
        401,
        "unauthorized",
    )
    assert str(error).startswith("GET /api/v0/users/me (401): ")


def test_satellite_register_list_find_delete(coderd_v1: CoderEmulator) -> None:
    private = satellite_key.generate_private_key_pem()
    public = satellite_key.public_key_pem(private)

    async def action(client: CoderV1Client) -> None:
        created = await client.create_satellite("sat-lifecycle", public)
        assert created.fingerprint == satellite_key.fingerprint(public)
        assert created in await client.list_satellites()
        assert await client.find_satellite("sat-lifecycle") == created
        with pytest.raises(CoderConflict) as duplicate:
            await client.create_satellite("sat-lifecycle", public)
        assert duplicate.value.status == 409
        await client.delete_satellite(created.id)
        assert await client.find_satellite("sat-lifecycle") is None
        with pytest.raises(CoderNotFound):
            await client.delete_satellite(created.id)

    run_with(coderd_v1, action)


def test_empty_satellite_list_is_not_an_error(coderd_factory: Callable[..., CoderEmulator]) -> None:
    emulator = coderd_factory("v1.21")
    assert run_with(emulator, lambda c: c.list_satellites()) == []


def test_satellite_with_a_bad_key_is_refused(coderd_v1: CoderEmulator) -> None:
    with pytest.raises(CoderAPIError) as caught:
        run_with(coderd_v1, lambda c: c.create_satellite("sat-bad-key", "not a key"))
    assert caught.value.status == 400
    assert "PEM ECDSA P-256" in str(caught.value)


def test_fetch_satellite_key_replaces_the_path_and_sends_no_auth(
    coderd_v1: CoderEmulator,
) -> None:
    key = run_with(coderd_v1, lambda c: c.fetch_satellite_key(f"{coderd_v1.url}/some/path?x=1"))
    assert key.key.startswith("-----BEGIN PUBLIC KEY-----")
    assert key.fingerprint == satellite_key.fingerprint(key.key)
    # The key endpoint needs no session token: a client with a bad token still gets it.
    again = run_with(coderd_v1, lambda c: c.fetch_satellite_key(coderd_v1.url), token="bad-token")
    assert again == key


def test_fetch_satellite_key_from_an_unreachable_satellite(coderd_v1: CoderEmulator) -> None:
    with pytest.raises(CoderUnavailable) as caught:
        run_with(coderd_v1, lambda c: c.fetch_satellite_key("http://127.0.0.1:9"), timeout=2)
    assert caught.value.path == "/api/private/satellites/key"


@pytest.mark.parametrize(
    ("call", "path"),
    [
        (lambda c: c.list_satellites(), "/api/private/satellites"),
        (lambda c: c.create_satellite("x", "key"), "/api/private/satellites"),
        (lambda c: c.delete_satellite("some-id"), "/api/private/satellites/some-id"),
        (lambda c: c.set_networking_v2("some-id", True), "/api/private/resource-pools/some-id"),
    ],
)
def test_a_1_20_primary_is_told_to_upgrade_first(
    coderd_v1_20: CoderEmulator, call: Callable[[CoderV1Client], Awaitable[Any]], path: str
) -> None:
    with pytest.raises(CoderUnsupported) as caught:
        run_with(coderd_v1_20, call)
    assert caught.value.path == path
    assert "upgrade the primary to 1.21 first" in str(caught.value)
    assert "1.20.0" in str(caught.value)


def test_a_1_20_primary_has_no_satellite_routes_and_no_net_v2_field(
    coderd_v1_20: CoderEmulator,
) -> None:
    response = coderd_v1_20.admin("GET", "/api/private/satellites")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    providers = run_with(coderd_v1_20, lambda c: c.list_providers())
    assert providers and all(p.enable_net_v2 is None for p in providers)


def test_providers_are_seeded_per_region(coderd_v1: CoderEmulator) -> None:
    providers = run_with(coderd_v1, lambda c: c.list_providers())
    by_name = {p.name: p for p in providers}
    assert {"us-east", "eu-west", "ap-southeast"} <= set(by_name)
    east = by_name["us-east"]
    assert east.status == "ready"
    assert east.envproxy_access_url == "https://us-east.coder.lab.internal"
    assert run_with(coderd_v1, lambda c: c.get_provider(east.id)) == east


def test_networking_v2_on_and_off(coderd_v1: CoderEmulator) -> None:
    async def action(client: CoderV1Client) -> tuple[bool | None, bool | None, bool | None]:
        provider = next(p for p in await client.list_providers() if p.name == "eu-west")
        before = provider.enable_net_v2
        on = (await client.set_networking_v2(provider.id, True)).enable_net_v2
        off = (await client.set_networking_v2(provider.id, False)).enable_net_v2
        return before, on, off

    assert run_with(coderd_v1, action) == (False, True, False)


def test_missing_provider_is_not_found(coderd_v1: CoderEmulator) -> None:
    with pytest.raises(CoderNotFound) as caught:
        run_with(coderd_v1, lambda c: c.get_provider("no-such-provider"))
    assert caught.value.path == "/api/private/resource-pools/no-such-provider"


def test_workspaces_list_get_filter_and_per_provider(coderd_v1: CoderEmulator) -> None:
    async def action(client: CoderV1Client) -> None:
        workspaces = await client.list_workspaces()
        check = next(w for w in workspaces if w.name == "migration-check-us-east")
        assert check.latest_stat.container_status in ("ON", "CREATING")
        assert await client.get_workspace(check.id) == check or check.updating
        mine = await client.list_workspaces(user_id=check.user_id)
        assert {w.user_id for w in mine} == {check.user_id}
        none = await client.list_workspaces(org_id="no-such-org")
        assert none == []
        provider = next(p for p in await client.list_providers() if p.name == "us-east")
        on_provider = await client.provider_workspaces(provider.id)
        assert [w.name for w in on_provider] == ["migration-check-us-east"]
        with pytest.raises(CoderNotFound):
            await client.get_workspace("no-such-workspace")

    run_with(coderd_v1, action)


def _workspace_id(client: CoderV1Client, name: str) -> Awaitable[str]:
    async def find() -> str:
        return next(w.id for w in await client.list_workspaces() if w.name == name)

    return find()


def test_rebuild_streams_start_stage_done_then_container_is_on(coderd_v1: CoderEmulator) -> None:
    async def action(client: CoderV1Client) -> tuple[list[str], Any, Any]:
        workspace_id = await _workspace_id(client, "migration-check-eu-west")
        before = await client.get_workspace(workspace_id)
        await client.rebuild_workspace(workspace_id)
        assert (await client.get_workspace(workspace_id)).updating is True
        events = [e.type async for e in client.watch_build(workspace_id)]
        after = await client.get_workspace(workspace_id)
        return events, before, after

    events, before, after = run_with(coderd_v1, action)
    assert events[0] == "start" and events[-1] == "done"
    assert "stage" in events
    assert after.latest_stat.container_status == "ON"
    assert after.updating is False
    assert after.last_built_at is not None and before.last_built_at is not None
    assert after.last_built_at > before.last_built_at


def test_wait_for_build_returns_the_ready_workspace(coderd_v1: CoderEmulator) -> None:
    async def action(client: CoderV1Client) -> Any:
        workspace_id = await _workspace_id(client, "migration-check-us-east")
        await client.rebuild_workspace(workspace_id)
        return await client.wait_for_build(workspace_id, timeout=30)

    workspace = run_with(coderd_v1, action)
    assert workspace.latest_stat.container_status == "ON"


def test_failing_rebuild_is_reported(coderd_v1: CoderEmulator) -> None:
    coderd_v1.add_fault(kind="fail_build", workspace="migration-check-ap-southeast", count=1)

    async def action(client: CoderV1Client) -> None:
        workspace_id = await _workspace_id(client, "migration-check-ap-southeast")
        await client.rebuild_workspace(workspace_id)
        with pytest.raises(CoderAPIError, match="workspace build failed"):
            await client.wait_for_build(workspace_id, timeout=30)
        failed = await client.get_workspace(workspace_id)
        assert failed.latest_stat.container_status == "FAILED"
        await client.rebuild_workspace(workspace_id)
        assert (
            await client.wait_for_build(workspace_id, timeout=30)
        ).latest_stat.container_status == "ON"

    run_with(coderd_v1, action)


def test_stuck_build_times_out(coderd_v1: CoderEmulator) -> None:
    coderd_v1.add_fault(kind="stuck_build", workspace="migration-check-us-east", count=1)

    async def action(client: CoderV1Client) -> None:
        workspace_id = await _workspace_id(client, "migration-check-us-east")
        await client.rebuild_workspace(workspace_id)
        with pytest.raises(CoderAPIError, match="did not finish within 1s"):
            await client.wait_for_build(workspace_id, timeout=1)
        await client.rebuild_workspace(workspace_id)  # a new build replaces the stuck one
        await client.wait_for_build(workspace_id, timeout=30)

    run_with(coderd_v1, action)


def test_wait_falls_back_to_polling_when_the_websocket_fails(
    coderd_v1: CoderEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    coderd_v1.add_fault(kind="status", status=503, path="/api/private/workspaces/")

    async def action(client: CoderV1Client) -> Any:
        workspace_id = await _workspace_id(client, "migration-check-eu-west")
        await client.rebuild_workspace(workspace_id)
        return await client.wait_for_build(workspace_id, timeout=30)

    with caplog.at_level(logging.WARNING, logger="coder_migrate.providers.coder"):
        workspace = run_with(coderd_v1, action, poll_interval=0.05)
    assert workspace.latest_stat.container_status == "ON"
    assert "polling the workspace instead" in caplog.text


def test_watch_update_with_a_bad_token_is_an_auth_error(coderd_v1: CoderEmulator) -> None:
    workspace_id = coderd_v1.agents()[0]["workspace_id"]

    async def action(client: CoderV1Client) -> None:
        async for _event in client.watch_build(workspace_id):
            pass

    with pytest.raises(CoderAuthError) as caught:
        run_with(coderd_v1, action, token="0123456789-wrongwrongwrongwrongwr")
    assert caught.value.status == 401


def test_idempotent_calls_retry_through_injected_503s(
    coderd_v1: CoderEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    coderd_v1.add_fault(kind="status", status=503, path="/api/v0/users/me", count=2)
    with caplog.at_level(logging.WARNING, logger="coder_migrate.providers.coder"):
        me = run_with(coderd_v1, lambda c: c.me())
    assert me.username == "admin"
    assert caplog.text.count("GET /api/v0/users/me failed (503)") == 2


def test_retries_are_bounded(coderd_v1: CoderEmulator) -> None:
    coderd_v1.add_fault(kind="status", status=503, path="/api/v0/orgs")
    with pytest.raises(CoderUnavailable) as caught:
        run_with(coderd_v1, lambda c: c.list_orgs())
    assert caught.value.status == 503


def test_idempotent_calls_retry_through_dropped_connections(coderd_v1: CoderEmulator) -> None:
    coderd_v1.add_fault(kind="drop", path="/api/private/resource-pools", count=2)
    providers = run_with(coderd_v1, lambda c: c.list_providers())
    assert len(providers) >= 3
    assert coderd_v1.faults() == []


def test_dropped_connections_beyond_the_budget_are_unavailable(coderd_v1: CoderEmulator) -> None:
    coderd_v1.add_fault(kind="drop", path="/api/private/resource-pools")
    with pytest.raises(CoderUnavailable, match="could not reach the primary"):
        run_with(coderd_v1, lambda c: c.list_providers())


def test_non_idempotent_calls_are_not_retried_on_503(coderd_v1: CoderEmulator) -> None:
    coderd_v1.add_fault(
        kind="status", status=503, path="/api/private/satellites", method="POST", count=2
    )
    public = satellite_key.public_key_pem(satellite_key.generate_private_key_pem())
    with pytest.raises(CoderUnavailable):
        run_with(coderd_v1, lambda c: c.create_satellite("sat-no-retry", public))
    # Exactly one attempt used one of the two injected failures.
    assert [f["count"] for f in coderd_v1.faults()] == [1]


def test_slow_answers_time_out_and_are_retried(coderd_v1: CoderEmulator) -> None:
    coderd_v1.add_fault(kind="latency", seconds=2, path="/api/v0/users/me", count=1)
    me = run_with(coderd_v1, lambda c: c.me(), timeout=0.5)
    assert me.username == "admin"


def test_registered_satellite_learns_where_agents_listen(coderd_v1: CoderEmulator) -> None:
    private = satellite_key.generate_private_key_pem()
    agent = next(a for a in coderd_v1.agents() if a["workspace_name"] == "migration-check-us-east")

    async def action(client: CoderV1Client) -> None:
        satellite = await client.create_satellite(
            "sat-agents", satellite_key.public_key_pem(private)
        )
        async with CoderV1SatelliteClient(coderd_v1.url, private, retry=FAST_RETRY) as sat:
            by_id = await sat.workspace_address(agent["workspace_id"])
            by_name = await sat.find_workspace_address("platform-bot", "migration-check-us-east")
            assert by_id == by_name
            assert by_id.model_dump() == agent
            async with httpx.AsyncClient() as http:
                echo = await http.post(f"{by_id.apps['code-server']}/hello", content=b"abc")
            assert echo.json()["path"] == "/hello" and echo.json()["body_bytes"] == 3
            with pytest.raises(CoderNotFound):
                await sat.workspace_address("no-such-workspace")
        await client.delete_satellite(satellite.id)
        async with CoderV1SatelliteClient(coderd_v1.url, private, retry=FAST_RETRY) as sat:
            with pytest.raises(CoderAuthError):
                await sat.workspace_address(agent["workspace_id"])

    run_with(coderd_v1, action)


def test_state_and_admin_token_survive_a_restart(
    coderd_factory: Callable[..., CoderEmulator],
) -> None:
    emulator = coderd_factory("v1.21")
    token = emulator.admin_token
    public = satellite_key.public_key_pem(satellite_key.generate_private_key_pem())
    created = run_with(emulator, lambda c: c.create_satellite("sat-persist", public))
    emulator.restart()
    assert emulator.admin_token == token
    assert run_with(emulator, lambda c: c.list_satellites()) == [created]
    assert oct(emulator.token_file.stat().st_mode & 0o777) == "0o600"


def test_find_user_and_workspace_by_name(coderd_v1: CoderEmulator) -> None:
    async def action(client: CoderV1Client) -> None:
        bot = await client.find_user("platform-bot")
        assert bot is not None and bot.username == "platform-bot"
        assert await client.find_user(bot.email) == bot
        assert await client.find_user("nobody") is None
        workspace = await client.find_workspace("migration-check-us-east", owner="platform-bot")
        assert workspace is not None and workspace.user_id == bot.id
        assert await client.find_workspace("migration-check-us-east", owner="admin") is None
        assert await client.find_workspace("nope", owner="platform-bot") is None

    run_with(coderd_v1, action)


def test_password_login_gives_a_working_session(
    coderd_factory: Callable[..., CoderEmulator],
) -> None:
    emulator = coderd_factory(
        "v1.21", config={"users": [{"username": "ops", "email": "ops@x.test", "password": "pw1"}]}
    )
    good = httpx.post(
        f"{emulator.url}/auth/basic/login", json={"email": "ops@x.test", "password": "pw1"}
    )
    bad = httpx.post(
        f"{emulator.url}/auth/basic/login", json={"email": "ops@x.test", "password": "no"}
    )
    assert good.status_code == 200 and bad.status_code == 401
    me = run_with(emulator, lambda c: c.me(), token=good.json()["session_token"])
    assert me.username == "ops" and me.roles == ["site-member"]
