"""Which token opens which app, and which address the proxy may connect to."""

from __future__ import annotations

import time

from coder_migrate.providers.coder.app_tokens import AppRequest, SignedAppToken
from coder_migrate.providers.coder.models_v2 import AgentAddress
from coder_migrate.proxy.auth import subdomain_session_cookie, target_for, token_matches
from coder_migrate.proxy.router import AppRoute

AGENT = "8c1a6f0e-3b1d-4c7e-9a55-2f4be0c3d111"
ADDRESS = AgentAddress(
    agent_id=AGENT,
    agent_name="main",
    workspace_id="w1",
    workspace_name="dev",
    owner="alice",
    owner_id="u1",
    apps={"code-server": "http://127.0.0.1:41001/base"},
    ports={"8080": "127.0.0.1:41002", "22": "127.0.0.1:41003"},
    port_protocols={"8080": "http", "22": "tcp"},
    pty_url="ws://127.0.0.1:41002/pty",
)


def app(method: str = "subdomain", slug: str = "code-server", **overrides: str) -> AppRoute:
    fields = {
        "access_method": method,
        "username": "alice",
        "workspace": "dev",
        "agent": "main",
        "app_slug_or_port": slug,
        "base_path": "/",
        "upstream_path": "/x",
    }
    fields.update(overrides)
    return AppRoute(**fields)  # type: ignore[arg-type]


def claims(method: str = "subdomain", slug: str = "code-server", **request: str) -> SignedAppToken:
    fields = {
        "access_method": method,
        "base_path": "/",
        "username_or_id": "alice",
        "workspace_name_or_id": "dev",
        "agent_name_or_id": "main",
        "app_slug_or_port": slug,
    }
    fields.update(request)
    now = int(time.time())
    return SignedAppToken(
        exp=now + 60,
        iat=now,
        request=AppRequest(**fields),  # type: ignore[arg-type]
        user_id="u1",
        username="alice",
        workspace_id="w1",
        agent_id=AGENT,
    )


def test_a_token_opens_only_the_app_it_names() -> None:
    assert token_matches(claims(), app())
    assert not token_matches(claims(slug="other"), app())
    assert not token_matches(claims(username_or_id="bob"), app())
    assert not token_matches(claims(workspace_name_or_id="prod"), app())
    assert not token_matches(claims(agent_name_or_id="gpu"), app())
    assert not token_matches(claims(method="path"), app())


def test_path_tokens_are_bound_to_the_base_path() -> None:
    base = "/@alice/dev/apps/code-server/"
    assert token_matches(claims("path", base_path=base), app("path", base_path=base))
    assert not token_matches(
        claims("path", base_path="/@alice/dev/apps/x/"), app("path", base_path=base)
    )


def test_terminal_tokens_are_bound_to_the_agent() -> None:
    terminal = AppRoute("terminal", "", "", "", "", "/p", "", agent_id=AGENT)
    assert token_matches(claims("terminal", slug=""), terminal)
    other = AppRoute(
        "terminal", "", "", "", "", "/p", "", agent_id="00000000-0000-0000-0000-000000000000"
    )
    assert not token_matches(claims("terminal", slug=""), other)


def test_targets_come_only_from_the_primarys_addresses() -> None:
    assert target_for(ADDRESS, app()).key == ("127.0.0.1", 41001, False)  # type: ignore[union-attr]
    assert target_for(ADDRESS, app()).path_prefix == "/base"  # type: ignore[union-attr]
    assert target_for(ADDRESS, app(slug="8080")).key == ("127.0.0.1", 41002, False)  # type: ignore[union-attr]
    assert target_for(ADDRESS, app(slug="9999")) is None
    assert target_for(ADDRESS, app(slug="unknown")) is None
    terminal = AppRoute("terminal", "", "", "", "", "/p", "", agent_id=AGENT)
    pty = target_for(ADDRESS, terminal)
    assert pty is not None and pty.websocket_path == "/pty" and pty.port == 41002


def tcp(port: str, agent_id: str = AGENT) -> AppRoute:
    return AppRoute("tcp", "", "", "", port, "/t", "", agent_id=agent_id)


def test_tcp_tunnels_need_the_agents_terminal_token() -> None:
    assert token_matches(claims("terminal", slug=""), tcp("22"))
    assert not token_matches(claims("terminal", slug=""), tcp("22", agent_id="other"))
    # A token for the same port as a web app (or any other app) opens no tunnel.
    assert not token_matches(claims("subdomain", slug="22"), tcp("22"))
    assert not token_matches(claims("path", slug="22"), tcp("22"))


def test_tcp_targets_are_only_ports_the_agent_declares_as_tcp() -> None:
    target = target_for(ADDRESS, tcp("22"))
    assert target is not None and target.key == ("127.0.0.1", 41003, False)
    assert target_for(ADDRESS, tcp("8080")) is None  # an http port
    assert target_for(ADDRESS, tcp("2222")) is None  # not declared at all
    undeclared = ADDRESS.model_copy(update={"port_protocols": {}})
    assert target_for(undeclared, tcp("22")) is None  # no protocol said: not TCP


def test_subdomain_cookie_name_is_per_wildcard() -> None:
    name = subdomain_session_cookie("*.apps.example.com")
    assert name.startswith("coder_subdomain_app_session_token_") and len(name) == 34 + 32
    assert name != subdomain_session_cookie("*.other.example.com")
