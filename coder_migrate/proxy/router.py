"""Routing: a pure function from a request head to what the proxy does with it.

Workspace traffic (subdomain apps and ports on the wildcard host, path apps, the terminal
websocket, TCP over websocket) becomes an :class:`AppRoute` that still has to be
authorised; the proxy's own endpoints become :class:`Local` answers; everything else is
forwarded to the primary (satellite) or answered with the "head to the dashboard" page
(workspace proxy). Routes and names follow Coder's ``appurl`` and ``wsproxy``
(coder-v2-workspace-proxies.md §3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import unquote

from coder_migrate.providers.coder.health import health_path
from coder_migrate.proxy.http1 import RequestHead

__all__ = [
    "SIGNED_TOKEN_QUERY",
    "AppRoute",
    "Decision",
    "Forward",
    "Local",
    "LocalKind",
    "Reject",
    "RouteTable",
    "parse_subdomain",
    "route",
    "terminal_query",
]

LocalKind = Literal[
    "healthz",
    "healthz-report",
    "buildinfo",
    "latency-check",
    "satellite-key",
    "dashboard",
]
# "tcp" is the project's TCP-over-websocket route; it is authorised by a terminal token.
AccessMethod = Literal["path", "subdomain", "terminal", "tcp"]

_NAME_RE: Final = re.compile(r"^[a-z0-9]([a-z0-9_.-]*[a-z0-9])?$", re.IGNORECASE)
_PORT_RE: Final = re.compile(r"^[0-9]{1,5}s?$")
_UUID_RE: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_PTY_PREFIX: Final = "/api/v2/workspaceagents/"
_PTY_METRIC: Final = "/api/v2/workspaceagents/{id}/pty"
_TCP_METRIC: Final = "/api/v2/workspaceagents/{id}/tcp"
# The terminal's signed token travels in this query parameter (Coder's name).
SIGNED_TOKEN_QUERY = "coder_signed_app_token_23db1dde"  # noqa: S105 - a parameter name
_READ_METHODS: Final = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class RouteTable:
    """What routing needs to know about this proxy (from its settings)."""

    mode: Literal["workspace-proxy", "satellite", "envproxy"]
    wildcard_suffix: str = ""  # ".apps.example.com" or "--apps.example.com"; "" = off
    path_apps: bool = True


@dataclass(frozen=True, slots=True)
class Local:
    """Answered by the proxy itself."""

    kind: LocalKind
    metric_path: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Reverse-proxied to the primary (satellite mode)."""

    metric_path: str = "/{primary}"


@dataclass(frozen=True, slots=True)
class Reject:
    """Refused with ``status``; ``reason`` is for logs, never sent."""

    status: int
    reason: str
    metric_path: str = "/{rejected}"
    location: str = ""


@dataclass(frozen=True, slots=True)
class AppRoute:
    """Workspace traffic, to be authorised with a signed app token.

    ``upstream_path`` is the path (and query) sent to the app: path apps lose their
    ``/@user/workspace/apps/app`` prefix, as Coder's proxy does.
    """

    access_method: AccessMethod
    username: str
    workspace: str
    agent: str
    app_slug_or_port: str
    base_path: str
    upstream_path: str
    app_prefix: str = ""
    agent_id: str = ""
    metric_path: str = "/{app}"

    @property
    def is_port(self) -> bool:
        return _PORT_RE.match(self.app_slug_or_port) is not None


Decision = Local | Forward | Reject | AppRoute


def parse_subdomain(label: str) -> tuple[str, str, str, str, str] | None:
    """``[prefix---]app--agent--workspace--user`` -> (prefix, app, agent, workspace, user).

    The agent part may be left out (``app--workspace--user``). ``None`` when malformed.
    """
    prefix = ""
    if "---" in label:
        prefix, _, label = label.rpartition("---")
        prefix += "---"
    parts = label.split("--")
    if len(parts) == 4:
        app, agent, workspace, user = parts
    elif len(parts) == 3:
        app, workspace, user = parts
        agent = ""
    else:
        return None
    for part in (app, workspace, user) + ((agent,) if agent else ()):
        if not _NAME_RE.match(part) or "--" in part:
            return None
    if app[0].isdigit() and _PORT_RE.match(app):
        port = int(app.rstrip("s"))
        if not 1 <= port <= 65535:
            return None
    return prefix, app.lower(), agent.lower(), workspace.lower(), user.lower()


def _subdomain_route(head: RequestHead, label: str) -> Decision:
    parsed = parse_subdomain(label)
    if parsed is None:
        return Reject(404, "malformed application host", "/{subdomain-app}")
    prefix, app, agent, workspace, user = parsed
    return AppRoute(
        access_method="subdomain",
        username=user,
        workspace=workspace,
        agent=agent,
        app_slug_or_port=app,
        base_path="/",
        upstream_path=head.target.decode("latin-1"),
        app_prefix=prefix,
        metric_path="/{subdomain-app}",
    )


def _path_app_route(head: RequestHead, path: str) -> Decision:
    # /@user/workspace[.agent]/apps/app/rest  (the "@" may arrive as %40)
    rest = path[2:] if path.startswith("/@") else path[4:]
    parts = rest.split("/", 4)
    if len(parts) < 4 or parts[2] != "apps":
        return Reject(404, "malformed path app URL", "/@{user}/{workspace}/apps/{app}")
    user, workspace_agent, _, app = parts[:4]
    workspace, _, agent = workspace_agent.partition(".")
    for part in (user, workspace, app) + ((agent,) if agent else ()):
        if not _NAME_RE.match(unquote(part)):
            return Reject(404, "malformed path app URL", "/@{user}/{workspace}/apps/{app}")
    base_path = f"/@{user}/{workspace_agent}/apps/{app}/"
    if len(parts) == 4:
        # Coder redirects ".../apps/app" to ".../apps/app/" so relative URLs resolve.
        query = f"?{head.query}" if head.query else ""
        return Reject(
            307,
            "path app without a trailing slash",
            "/@{user}/{workspace}/apps/{app}/*",
            location=base_path + query,
        )
    upstream = "/" + parts[4] + (f"?{head.query}" if head.query else "")
    return AppRoute(
        access_method="path",
        username=unquote(user).lower(),
        workspace=unquote(workspace).lower(),
        agent=unquote(agent).lower(),
        app_slug_or_port=unquote(app).lower(),
        base_path=base_path,
        upstream_path=upstream,
        metric_path="/@{user}/{workspace}/apps/{app}/*",
    )


def _agent_route(head: RequestHead, path: str) -> Decision | None:
    """``/api/v2/workspaceagents/{id}/pty`` (terminal) or ``.../tcp?port=N`` (TCP tunnel)."""
    agent_id, _, tail = path[len(_PTY_PREFIX) :].partition("/")
    access_method: AccessMethod
    if tail == "pty":
        metric, access_method, port = _PTY_METRIC, "terminal", ""
    elif tail == "tcp":
        metric, access_method = _TCP_METRIC, "tcp"
        ports = [v for n, _, v in (p.partition("=") for p in head.query.split("&")) if n == "port"]
        port = ports[0] if len(ports) == 1 else ""
        if not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
            return Reject(400, "tcp needs exactly one port=1..65535", metric)
        port = str(int(port))  # "022" names port 22, as the agent declares it
    else:
        return None
    if not _UUID_RE.match(agent_id):
        return Reject(400, "agent id is not a UUID", metric)
    if not head.upgrade:
        return Reject(400, f"{access_method} needs a websocket", metric)
    return AppRoute(
        access_method=access_method,
        username="",
        workspace="",
        agent="",
        app_slug_or_port=port,
        base_path=path,
        upstream_path="",
        agent_id=agent_id,
        metric_path=metric,
    )


# Decisions without per-request data are made once (frozen dataclasses are slow to build).
_FORWARD: Final = Forward()
_DASHBOARD: Final = Local("dashboard", "/{dashboard}")
_DERP: Final = Reject(400, "DERP is not served by this proxy", "/derp")
_LOCAL_BOTH: Final = {
    "/healthz": Local("healthz", "/healthz"),
    "/latency-check": Local("latency-check", "/latency-check"),
}
_LOCAL_PROXY: Final = {
    **_LOCAL_BOTH,
    "/healthz-report": Local("healthz-report", "/healthz-report"),
    "/api/v2/buildinfo": Local("buildinfo", "/api/v2/buildinfo"),
}
_LOCAL_SATELLITE: Final = {
    **_LOCAL_BOTH,
    # The health path of a Coder v1 satellite (coder/coder 1.21.0 probes it).
    health_path("v1"): Local("healthz", health_path("v1")),
    "/api/private/satellites/key": Local("satellite-key", "/api/private/satellites/key"),
}
_LOCAL: Final = {
    "workspace-proxy": _LOCAL_PROXY,
    "satellite": _LOCAL_SATELLITE,
    "envproxy": _LOCAL_BOTH,
}
# What is not an app, a terminal or a local path: a satellite forwards it to the primary, a
# workspace proxy sends the browser to the dashboard, an envproxy serves workspaces only
# (ASSUMED, docs/proxy.md).
_OTHER: Final[dict[str, Decision]] = {
    "workspace-proxy": _DASHBOARD,
    "satellite": _FORWARD,
    "envproxy": Reject(404, "an envproxy serves workspace apps only", "/{other}"),
}
_NOT_ALLOWED: Final = {
    local.kind: Reject(405, "method not allowed", local.metric_path)
    for local in (*_LOCAL_PROXY.values(), *_LOCAL_SATELLITE.values())
}


def route(head: RequestHead, table: RouteTable) -> Decision:
    """Decide what to do with a request. Pure: no I/O, no clock, no randomness."""
    suffix = table.wildcard_suffix
    host = head.host
    if suffix and host.endswith(suffix):
        label = host[: -len(suffix)]
        if label and "." not in label:
            return _subdomain_route(head, label)
    path = head.path
    if path.startswith("/@") or path[:4].lower() == "/%40":
        if not table.path_apps:
            return Reject(401, "path apps are disabled", "/@{user}/{workspace}/apps/{app}/*")
        return _path_app_route(head, path)
    if path.startswith(_PTY_PREFIX):
        decision = _agent_route(head, path)
        if decision is not None:
            return decision
    local = _LOCAL[table.mode].get(path)
    if local is not None:
        if head.method not in _READ_METHODS and local.kind != "latency-check":
            return _NOT_ALLOWED[local.kind]
        return local
    if path == "/derp" or path.startswith("/derp/"):
        return _DERP
    return _OTHER[table.mode]


def terminal_query(query: str) -> str:
    """The terminal's query string without the signed token (the agent never sees it)."""
    return "&".join(
        part for part in query.split("&") if part and not part.startswith(SIGNED_TOKEN_QUERY + "=")
    )
