"""The router is a pure function: request heads in, decisions out, no sockets."""

from __future__ import annotations

import pytest

from coder_migrate.proxy.http1 import RequestHead, RequestParser
from coder_migrate.proxy.router import (
    AppRoute,
    Forward,
    Local,
    Reject,
    RouteTable,
    parse_subdomain,
    route,
)

PROXY = RouteTable(mode="workspace-proxy", wildcard_suffix=".apps.eu.example.com")
SATELLITE = RouteTable(mode="satellite", wildcard_suffix=".apps.eu.example.com")
ENVPROXY = RouteTable(mode="envproxy", wildcard_suffix=".apps.eu.example.com")
AGENT_ID = "8c1a6f0e-3b1d-4c7e-9a55-2f4be0c3d111"


class _Heads:
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)

    def on_request_body(self, chunk: bytes) -> None:
        pass

    def on_request_end(self) -> None:
        pass


def head(
    target: str, host: str = "eu.example.com", method: str = "GET", extra: str = ""
) -> RequestHead:
    sink = _Heads()
    RequestParser(sink).feed(f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
    return sink.heads[0]


def websocket(target: str, host: str = "eu.example.com") -> RequestHead:
    return head(target, host, extra="Connection: Upgrade\r\nUpgrade: websocket\r\n")


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("code-server--main--dev--alice", ("", "code-server", "main", "dev", "alice")),
        ("8080--main--dev--alice", ("", "8080", "main", "dev", "alice")),
        ("8443s--main--dev--alice", ("", "8443s", "main", "dev", "alice")),
        ("app--dev--alice", ("", "app", "", "dev", "alice")),
        ("pre---app--main--dev--alice", ("pre---", "app", "main", "dev", "alice")),
        ("App--Main--Dev--Alice", ("", "app", "main", "dev", "alice")),
    ],
)
def test_subdomain_labels_parse_like_coders_appurl(label: str, expected: tuple[str, ...]) -> None:
    assert parse_subdomain(label) == expected


@pytest.mark.parametrize(
    "label",
    [
        "app",
        "app--dev",
        "a--b--c--d--e",
        "--main--dev--alice",
        "app--main--dev--",
        "70000--m--d--u",
        "0--m--d--u",
    ],
)
def test_malformed_subdomain_labels_are_refused(label: str) -> None:
    assert parse_subdomain(label) is None


def test_subdomain_app_on_the_wildcard_host() -> None:
    decision = route(
        head("/index.html?x=1", "code-server--main--dev--alice.apps.eu.example.com"), PROXY
    )
    assert isinstance(decision, AppRoute)
    assert (decision.access_method, decision.username, decision.workspace, decision.agent) == (
        "subdomain",
        "alice",
        "dev",
        "main",
    )
    assert decision.app_slug_or_port == "code-server"
    assert decision.upstream_path == "/index.html?x=1"
    assert not decision.is_port


def test_port_forwarding_on_the_wildcard_host() -> None:
    decision = route(head("/", "8080--main--dev--alice.apps.eu.example.com:443"), PROXY)
    assert isinstance(decision, AppRoute)
    assert decision.is_port and decision.app_slug_or_port == "8080"


def test_a_host_deeper_than_one_label_under_the_wildcard_is_not_an_app() -> None:
    decision = route(head("/", "x.code-server--main--dev--alice.apps.eu.example.com"), PROXY)
    assert decision == Local("dashboard", "/{dashboard}")


def test_malformed_app_host_is_404() -> None:
    decision = route(head("/", "nonsense.apps.eu.example.com"), PROXY)
    assert isinstance(decision, Reject) and decision.status == 404


def test_path_app_strips_its_prefix() -> None:
    decision = route(head("/@alice/dev.main/apps/code-server/static/app.js?v=2"), PROXY)
    assert isinstance(decision, AppRoute)
    assert decision.access_method == "path"
    assert (decision.username, decision.workspace, decision.agent) == ("alice", "dev", "main")
    assert decision.base_path == "/@alice/dev.main/apps/code-server/"
    assert decision.upstream_path == "/static/app.js?v=2"


def test_path_app_with_percent_encoded_at() -> None:
    decision = route(head("/%40alice/dev/apps/code-server/"), PROXY)
    assert isinstance(decision, AppRoute)
    assert decision.username == "alice" and decision.agent == "" and decision.upstream_path == "/"


def test_path_app_without_trailing_slash_redirects() -> None:
    decision = route(head("/@alice/dev/apps/code-server?q=1"), PROXY)
    assert isinstance(decision, Reject)
    assert decision.status == 307
    assert decision.location == "/@alice/dev/apps/code-server/?q=1"


def test_path_apps_can_be_disabled() -> None:
    table = RouteTable(mode="workspace-proxy", path_apps=False)
    decision = route(head("/@alice/dev/apps/code-server/"), table)
    assert isinstance(decision, Reject) and decision.status == 401


def test_terminal_websocket() -> None:
    decision = route(websocket(f"/api/v2/workspaceagents/{AGENT_ID}/pty?reconnect=x"), PROXY)
    assert isinstance(decision, AppRoute)
    assert decision.access_method == "terminal" and decision.agent_id == AGENT_ID


def test_terminal_needs_a_websocket_and_a_uuid() -> None:
    plain = route(head(f"/api/v2/workspaceagents/{AGENT_ID}/pty"), PROXY)
    assert isinstance(plain, Reject) and plain.status == 400
    bad_id = route(websocket("/api/v2/workspaceagents/not-a-uuid/pty"), PROXY)
    assert isinstance(bad_id, Reject) and bad_id.status == 400


def test_tcp_over_websocket_names_the_agent_and_one_port() -> None:
    decision = route(websocket(f"/api/v2/workspaceagents/{AGENT_ID}/tcp?port=22&x=1"), PROXY)
    assert isinstance(decision, AppRoute)
    assert (decision.access_method, decision.agent_id, decision.app_slug_or_port) == (
        "tcp",
        AGENT_ID,
        "22",
    )
    assert decision.metric_path == "/api/v2/workspaceagents/{id}/tcp"
    leading_zero = route(websocket(f"/api/v2/workspaceagents/{AGENT_ID}/tcp?port=0022"), PROXY)
    assert isinstance(leading_zero, AppRoute) and leading_zero.app_slug_or_port == "22"
    # The same in satellite mode: the resolver, not the router, refuses it there.
    assert isinstance(
        route(websocket(f"/api/v2/workspaceagents/{AGENT_ID}/tcp?port=22"), SATELLITE), AppRoute
    )


@pytest.mark.parametrize(
    "query",
    ["", "port=", "port=0", "port=65536", "port=123456", "port=22&port=23", "port=2%32"],
)
def test_tcp_over_websocket_needs_exactly_one_valid_port(query: str) -> None:
    decision = route(websocket(f"/api/v2/workspaceagents/{AGENT_ID}/tcp?{query}"), PROXY)
    assert isinstance(decision, Reject) and decision.status == 400


def test_tcp_port_digits_are_ascii_only() -> None:
    # "\xb2" is a digit to str.isdigit() but not to int(): refused, not a crash.
    target = f"/api/v2/workspaceagents/{AGENT_ID}/tcp?port=\xb2".encode("latin-1")
    upgrade = RequestHead(
        "GET",
        target,
        "1.1",
        [(b"Host", b"h")],
        host="h",
        content_length=None,
        chunked=False,
        upgrade=True,
        keep_alive=True,
    )
    decision = route(upgrade, PROXY)
    assert isinstance(decision, Reject) and decision.status == 400


def test_tcp_over_websocket_needs_a_websocket_and_a_uuid() -> None:
    plain = route(head(f"/api/v2/workspaceagents/{AGENT_ID}/tcp?port=22"), PROXY)
    assert isinstance(plain, Reject) and plain.status == 400
    bad_id = route(websocket("/api/v2/workspaceagents/not-a-uuid/tcp?port=22"), PROXY)
    assert isinstance(bad_id, Reject) and bad_id.status == 400
    other = route(websocket(f"/api/v2/workspaceagents/{AGENT_ID}/udp?port=22"), PROXY)
    assert isinstance(other, Local) and other.kind == "dashboard"


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/healthz", "healthz"),
        ("/healthz-report", "healthz-report"),
        ("/api/v2/buildinfo", "buildinfo"),
        ("/latency-check", "latency-check"),
    ],
)
def test_workspace_proxy_own_endpoints(path: str, kind: str) -> None:
    decision = route(head(path), PROXY)
    assert isinstance(decision, Local) and decision.kind == kind


def test_own_endpoints_refuse_writes() -> None:
    decision = route(head("/healthz", method="POST", extra="Content-Length: 0\r\n"), PROXY)
    assert isinstance(decision, Reject) and decision.status == 405


def test_workspace_proxy_sends_everything_else_to_the_dashboard() -> None:
    assert route(head("/api/v2/users/me"), PROXY) == Local("dashboard", "/{dashboard}")
    assert route(head("/"), PROXY) == Local("dashboard", "/{dashboard}")


def test_satellite_forwards_everything_else_to_the_primary() -> None:
    assert route(head("/api/v0/users/me"), SATELLITE) == Forward()
    assert route(head("/api/v2/buildinfo"), SATELLITE) == Forward()
    key = route(head("/api/private/satellites/key"), SATELLITE)
    assert isinstance(key, Local) and key.kind == "satellite-key"


def test_satellite_still_relays_apps_itself() -> None:
    decision = route(head("/", "app--main--dev--alice.apps.eu.example.com"), SATELLITE)
    assert isinstance(decision, AppRoute)


def test_envproxy_relays_apps_and_answers_its_health_only() -> None:
    decision = route(head("/", "app--main--dev--alice.apps.eu.example.com"), ENVPROXY)
    assert isinstance(decision, AppRoute)
    # workspace-providers-envproxy-only templates/envproxy.yaml probes localhost:8080/healthz.
    assert route(head("/healthz"), ENVPROXY) == Local("healthz", "/healthz")
    for path in ("/api/v0/users/me", "/api/private/satellites/key", "/"):
        other = route(head(path), ENVPROXY)
        assert isinstance(other, Reject) and other.status == 404, path


def test_derp_is_refused() -> None:
    decision = route(websocket("/derp"), PROXY)
    assert isinstance(decision, Reject) and decision.status == 400


def test_wildcard_off_means_no_subdomain_apps() -> None:
    table = RouteTable(mode="workspace-proxy")
    assert route(head("/", "app--main--dev--alice.apps.eu.example.com"), table) == Local(
        "dashboard", "/{dashboard}"
    )


def test_the_terminal_token_is_not_passed_to_the_agent() -> None:
    from coder_migrate.proxy.router import terminal_query

    query = "reconnect=abc&coder_signed_app_token_23db1dde=SECRET&width=80"
    assert terminal_query(query) == "reconnect=abc&width=80"
