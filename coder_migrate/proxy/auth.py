"""Who may reach which workspace: signed app tokens, verified locally (workspace proxy).

A request for an app, a port or a terminal is served only with a signed app token the
primary issued (HS512 JWS, :mod:`coder_migrate.providers.coder.app_tokens`) whose request
matches this one. Without one, the proxy asks the primary for a token with the user's app
session cookie, or sends the browser to the primary's login. The upstream address always
comes from the primary's agent-address answer for the agent named in the token, never from
the request. Verified tokens and agent addresses are cached so the hot path stays in memory.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from coder_migrate.errors import CoderAPIError, CoderAuthError, CoderNotFound
from coder_migrate.providers.coder.app_tokens import (
    API_KEY_FEATURE,
    API_KEY_QUERY_PARAMETER,
    APP_TOKEN_FEATURE,
    SignedAppToken,
    decrypt_api_key,
    verify_app_token,
)
from coder_migrate.providers.coder.models_v1 import V1User
from coder_migrate.providers.coder.models_v2 import AgentAddress, CryptoKey
from coder_migrate.providers.coder.v1 import (
    CoderV1Client,
    CoderV1EnvproxyClient,
    CoderV1SatelliteClient,
)
from coder_migrate.providers.coder.v2 import CoderV2ProxyClient, signed_token_from
from coder_migrate.proxy.http1 import RequestHead
from coder_migrate.proxy.responses import Answer, Target
from coder_migrate.proxy.router import SIGNED_TOKEN_QUERY, AppRoute

__all__ = [
    "PATH_APP_SESSION_COOKIE",
    "SIGNED_TOKEN_COOKIE",
    "SIGNED_TOKEN_QUERY",
    "V1_SESSION_COOKIE",
    "V1AppResolver",
    "V2AppResolver",
    "hand_off_cookie",
    "subdomain_session_cookie",
    "target_for",
    "token_matches",
]

log = logging.getLogger("coder_migrate.proxy")

SIGNED_TOKEN_COOKIE = "coder_signed_app_token"  # noqa: S105 - a cookie name
PATH_APP_SESSION_COOKIE = "coder_path_app_session_token"
_MAX_TOKENS_TRIED = 4
_TOKEN_CACHE_SIZE = 10_000
_TOKEN_PRUNE_ABOVE = 512
_AGENT_TTL_SECONDS = 30.0
_KEY_REFRESH_SECONDS = 600.0
_KEY_RETRY_SECONDS = 10.0


def subdomain_session_cookie(wildcard_hostname: str) -> str:
    """Coder's per-wildcard cookie name (PR #19930)."""
    digest = hashlib.sha256(wildcard_hostname.encode()).hexdigest()[:32]
    return f"coder_subdomain_app_session_token_{digest}"


def token_matches(claims: SignedAppToken, app: AppRoute) -> bool:
    """True when the token was issued for exactly this app request.

    A TCP tunnel needs the agent's terminal token (ASSUMED, docs/proxy.md): a terminal
    already gives its holder a shell on the agent, so a TCP port of that agent adds nothing.
    """
    request = claims.request
    if app.access_method in ("terminal", "tcp"):
        return request.access_method == "terminal" and claims.agent_id == app.agent_id
    if request.access_method != app.access_method:
        return False
    if request.username_or_id.lower() not in (app.username, claims.user_id):
        return False
    if request.workspace_name_or_id.lower() not in (app.workspace, claims.workspace_id):
        return False
    if app.agent and request.agent_name_or_id.lower() not in (app.agent, claims.agent_id):
        return False
    if request.app_slug_or_port.lower() != app.app_slug_or_port:
        return False
    return app.access_method != "path" or request.base_path == app.base_path


def target_for(address: AgentAddress, app: AppRoute, set_cookie: bytes = b"") -> Target | None:
    """The upstream for ``app`` among the addresses the primary gave for this agent."""
    if app.access_method == "terminal":
        if not address.pty_url:
            return None
        parts = urlsplit(address.pty_url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname or not parts.port:
            return None
        return Target(
            parts.hostname,
            parts.port,
            tls=parts.scheme == "wss",
            server_hostname=parts.hostname,
            websocket_path=parts.path or "/",
            set_cookie=set_cookie,
        )
    if app.access_method == "tcp":
        tcp_address = address.tcp_address(app.app_slug_or_port)
        # None when the agent does not declare the port as TCP.
        return None if tcp_address is None else _host_port_target(tcp_address)
    slug = app.app_slug_or_port
    url = address.apps.get(slug)
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return Target(
            parts.hostname,
            port,
            tls=parts.scheme == "https",
            server_hostname=parts.hostname,
            path_prefix=parts.path,
            set_cookie=set_cookie,
        )
    port_address = address.ports.get(slug.removesuffix("s")) if app.is_port else None
    return None if port_address is None else _host_port_target(port_address, set_cookie)


def _host_port_target(host_port: str, set_cookie: bytes = b"") -> Target | None:
    host, _, port_text = host_port.rpartition(":")
    if not port_text.isdigit():
        return None
    return Target(host.strip("[]"), int(port_text), set_cookie=set_cookie)


class V2AppResolver:
    """Authorises app traffic for a Coder v2 workspace proxy."""

    def __init__(
        self,
        client: CoderV2ProxyClient,
        *,
        primary_url: str,
        access_url: str,
        wildcard_hostname: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.primary_url = primary_url
        self.access_url = access_url
        self.wildcard_hostname = wildcard_hostname
        self.subdomain_cookie = subdomain_session_cookie(wildcard_hostname)
        self.clock = clock
        self.keys: list[CryptoKey] = []
        self.api_keys: list[CryptoKey] = []  # workspace_apps_api_key: the login hand-off
        self.keys_fetched = 0.0
        self.tokens: dict[str, SignedAppToken] = {}
        self.agents: dict[str, tuple[AgentAddress, float]] = {}

    async def refresh_keys(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.keys_fetched < _KEY_REFRESH_SECONDS:
            return
        if force and now - self.keys_fetched < _KEY_RETRY_SECONDS:
            return
        self.keys_fetched = now
        self.keys = await self.client.crypto_keys(APP_TOKEN_FEATURE)
        self.api_keys = await self.client.crypto_keys(API_KEY_FEATURE)

    # -- tokens ------------------------------------------------------------------------

    def _candidates(self, head: RequestHead, app: AppRoute) -> list[str]:
        tokens: list[str] = []
        if app.access_method in ("terminal", "tcp"):
            for part in head.query.split("&"):
                name, _, value = part.partition("=")
                if name == SIGNED_TOKEN_QUERY and value:
                    tokens.append(value)
        tokens.extend(head.cookies(SIGNED_TOKEN_COOKIE))
        return tokens[:_MAX_TOKENS_TRIED]

    def _cached_claims(self, token: str, app: AppRoute) -> SignedAppToken | None:
        claims = self.tokens.get(token)
        if claims is None or claims.exp <= self.clock() or not token_matches(claims, app):
            return None
        return claims

    async def _verified(self, token: str) -> SignedAppToken | None:
        try:
            claims = verify_app_token(token, self.keys, now=self.clock())
        except CoderAuthError as error:
            if "unknown key" not in str(error):
                return None
            await self.refresh_keys(force=True)
            try:
                claims = verify_app_token(token, self.keys, now=self.clock())
            except CoderAuthError:
                return None
        self._remember(token, claims)
        return claims

    def _remember(self, token: str, claims: SignedAppToken) -> None:
        # Tokens live a minute: past a few hundred entries, expired ones are dropped so the
        # cache holds about a minute's worth rather than growing to its cap.
        if len(self.tokens) >= _TOKEN_PRUNE_ABOVE:
            now = self.clock()
            for key in [k for k, c in self.tokens.items() if c.exp <= now]:
                del self.tokens[key]
            if len(self.tokens) >= _TOKEN_CACHE_SIZE:
                self.tokens.clear()
        self.tokens[token] = claims

    # -- agents ------------------------------------------------------------------------

    def _cached_agent(self, agent_id: str) -> AgentAddress | None:
        entry = self.agents.get(agent_id)
        if entry is None or entry[1] < self.clock():
            return None
        return entry[0]

    async def _agent(self, agent_id: str) -> AgentAddress | None:
        address = self._cached_agent(agent_id)
        if address is not None:
            return address
        try:
            address = await self.client.agent_address(agent_id)
        except CoderNotFound:
            return None
        self.agents[agent_id] = (address, self.clock() + _AGENT_TTL_SECONDS)
        return address

    # -- the login hand-off ------------------------------------------------------------

    async def _hand_off(self, head: RequestHead, app: AppRoute, scheme: str) -> Answer:
        """Exchange the primary's encrypted API key for this proxy's session cookie and send
        the browser to the same URL without it (coderd/workspaceapps/proxy.go,
        ``handleAPIKeySmuggling``)."""
        pairs = parse_qsl(head.query, keep_blank_values=True)
        encrypted = next((v for k, v in pairs if k == API_KEY_QUERY_PARAMETER), "")
        session = await self._decrypted(encrypted)
        if not session:
            return _page(
                400,
                "Bad Request",
                "Could not decrypt API key. Please remove the query parameter and try again.",
            )
        cookie = hand_off_cookie(
            app.access_method, session, self.wildcard_hostname, secure=scheme == "https"
        )
        rest = [(k, v) for k, v in pairs if k != API_KEY_QUERY_PARAMETER]
        path = "/" + head.path.lstrip("/")  # origin-local: never "//host"
        location = path + ("?" + _go_encode(rest) if rest else "")
        return Answer(
            303, b"", b"text/plain", [(b"Set-Cookie", cookie), (b"Location", location.encode())]
        )

    async def _decrypted(self, encrypted: str) -> str:
        for attempt in (False, True):
            try:
                return decrypt_api_key(encrypted, self.api_keys, now=self.clock())
            except CoderAuthError as error:
                if attempt or "unknown key" not in str(error):
                    log.debug("login hand-off refused: %s", error)
                    return ""
            try:
                await self.refresh_keys(force=True)
            except CoderAPIError as error:
                log.warning("refreshing the API key keys failed: %s", error)
                return ""
        return ""

    # -- AppResolver -------------------------------------------------------------------

    def resolve_cached(self, head: RequestHead, app: AppRoute) -> Target | None:
        if API_KEY_QUERY_PARAMETER in head.query:
            return None  # the login hand-off: answered by resolve()
        for token in self._candidates(head, app):
            claims = self._cached_claims(token, app)
            if claims is None:
                continue
            address = self._cached_agent(claims.agent_id)
            if address is not None:
                return target_for(address, app)
        return None

    async def resolve(self, head: RequestHead, app: AppRoute, scheme: str) -> Target | Answer:
        if app.access_method in ("path", "subdomain") and API_KEY_QUERY_PARAMETER in head.query:
            return await self._hand_off(head, app, scheme)
        for token in self._candidates(head, app):
            claims = self._cached_claims(token, app) or await self._verified(token)
            if claims is None or not token_matches(claims, app):
                continue
            return await self._target(claims, app)
        if app.access_method in ("terminal", "tcp"):
            return _page(401, "Unauthorized", "A valid signed app token is required.")
        session = self._session_token(head, app)
        if not session:
            return self._login_redirect(head, scheme)
        return await self._issue(head, app, session, scheme)

    async def _target(
        self, claims: SignedAppToken, app: AppRoute, set_cookie: bytes = b""
    ) -> Target | Answer:
        try:
            address = await self._agent(claims.agent_id)
        except CoderAPIError as error:
            log.warning("agent address lookup failed: %s", error)
            return _page(502, "Bad Gateway", "The workspace could not be reached.")
        if address is None:
            return _page(404, "Not Found", "The workspace agent was not found.")
        target = target_for(address, app, set_cookie)
        if target is None:
            return _page(404, "Not Found", "The application was not found.")
        return target

    def _session_token(self, head: RequestHead, app: AppRoute) -> str:
        names = (
            [PATH_APP_SESSION_COOKIE]
            if app.access_method == "path"
            else [self.subdomain_cookie, "coder_subdomain_app_session_token"]
        )
        for name in names:
            values = head.cookies(name)
            if values:
                return values[0]
        header = head.header(b"coder-session-token")
        return header.decode("latin-1") if header else ""

    def _app_url(self, head: RequestHead, scheme: str) -> str:
        host = head.header(b"host") or b""
        return f"{scheme}://{host.decode('latin-1')}{head.target.decode('latin-1')}"

    def _login_redirect(self, head: RequestHead, scheme: str) -> Answer:
        location = (
            f"{self.primary_url}/api/v2/applications/auth-redirect?redirect_uri="
            f"{quote(self._app_url(head, scheme), safe='')}"
        )
        return Answer(303, b"", b"text/plain", [(b"Location", location.encode())])

    async def _issue(
        self, head: RequestHead, app: AppRoute, session: str, scheme: str
    ) -> Target | Answer:
        payload = {
            "app_request": {
                "access_method": app.access_method,
                "base_path": app.base_path,
                "app_prefix": app.app_prefix,
                "username_or_id": app.username,
                "workspace_name_or_id": app.workspace,
                "agent_name_or_id": app.agent,
                "app_slug_or_port": app.app_slug_or_port,
            },
            "path_app_base_url": self.access_url,
            "app_hostname": head.host if app.access_method == "subdomain" else "",
            "app_path": head.path,
            "app_query": head.query,
            "session_token": session,
        }
        try:
            response = await self.client.issue_signed_app_token(payload)
        except CoderAPIError as error:
            log.warning("issuing a signed app token failed: %s", error)
            return _page(502, "Bad Gateway", "The primary could not be reached.")
        if response.status_code != 201:
            # Coder copies the primary's answer (a login redirect or an HTML error page).
            headers = []
            if "location" in response.headers:
                headers.append((b"Location", response.headers["location"].encode("latin-1")))
            content_type = response.headers.get("content-type", "text/html; charset=utf-8")
            return Answer(response.status_code, response.content, content_type.encode(), headers)
        token = signed_token_from(response)
        claims = await self._verified(token)
        if claims is None or not token_matches(claims, app):
            return _page(502, "Bad Gateway", "The primary issued an unusable token.")
        cookie_path = app.base_path if app.access_method == "path" else "/"
        secure = "; Secure" if scheme == "https" else ""
        cookie = (
            f"{SIGNED_TOKEN_COOKIE}={token}; Path={cookie_path}; Max-Age="
            f"{max(1, claims.exp - int(self.clock()))}; HttpOnly; SameSite=Lax{secure}"
        )
        return await self._target(claims, app, cookie.encode("latin-1"))


def hand_off_cookie(access_method: str, session: str, wildcard: str, *, secure: bool) -> bytes:
    """The app session cookie Coder's proxy sets after the hand-off: per access method, for
    the whole wildcard domain on subdomain apps, no expiry, HttpOnly, SameSite=Lax."""
    if access_method == "path":
        name, domain = PATH_APP_SESSION_COOKIE, ""
    else:
        name = subdomain_session_cookie(wildcard)
        domain = "; Domain=." + wildcard.split(".", 1)[1] if "." in wildcard else ""
    tail = "; Secure" if secure else ""
    return f"{name}={session}{domain}; Path=/; HttpOnly; SameSite=Lax{tail}".encode("latin-1")


def _go_encode(pairs: list[tuple[str, str]]) -> str:
    """Go's ``url.Values.Encode``: keys sorted, values in order."""
    return urlencode(sorted(pairs, key=lambda pair: pair[0]), quote_via=quote, safe="")


def _app_url(scheme: str, host: str, head: RequestHead) -> str:
    return f"{scheme}://{host}{head.target.decode('latin-1')}"


def _page(status: int, title: str, text: str) -> Answer:
    body = (
        f"<!doctype html><html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{text}</p></body></html>"
    ).encode()
    return Answer(status, body)


V1_SESSION_COOKIE = "session_token"  # a cookie name (ASSUMED for Coder v1)
_V1_CACHE_SECONDS = 30.0


class V1AppResolver:
    """Authorises app traffic for a Coder v1 satellite or envproxy (ASSUMED flow,
    docs/coder-emulator.md).

    The user's session (cookie ``session_token`` or header ``Session-Token``) is checked with
    the primary's ``/api/v0/users/me``; the workspace's address comes from the satellite
    endpoints, signed with the satellite key (an envproxy's, with its provider's token); only
    the owner or a site admin gets through.
    """

    def __init__(
        self,
        satellite: CoderV1SatelliteClient | CoderV1EnvproxyClient,
        *,
        primary_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.satellite = satellite
        self.primary_url = primary_url
        self.clock = clock
        self.users: dict[str, tuple[V1User, float]] = {}
        self.addresses: dict[tuple[str, str], tuple[AgentAddress, float]] = {}

    @staticmethod
    def _session(head: RequestHead) -> str:
        values = head.cookies(V1_SESSION_COOKIE)
        if values:
            return values[0]
        header = head.header(b"session-token")
        return header.decode("latin-1") if header else ""

    @staticmethod
    def _key(session: str) -> str:
        return hashlib.sha256(session.encode()).hexdigest()  # never keep the token itself

    @staticmethod
    def _allowed(user: V1User, address: AgentAddress) -> bool:
        return user.username == address.owner or "site-admin" in user.roles

    def resolve_cached(self, head: RequestHead, app: AppRoute) -> Target | None:
        session = self._session(head)
        if not session or app.access_method in ("terminal", "tcp"):
            return None
        now = self.clock()
        user = self.users.get(self._key(session))
        address = self.addresses.get((app.username, app.workspace))
        if user is None or address is None or user[1] < now or address[1] < now:
            return None
        if not self._allowed(user[0], address[0]):
            return None
        return target_for(address[0], app)

    async def resolve(self, head: RequestHead, app: AppRoute, scheme: str) -> Target | Answer:
        if app.access_method in ("terminal", "tcp"):
            return _page(404, "Not Found", "Terminals and TCP are not relayed by a v1 satellite.")
        session = self._session(head)
        host = (head.header(b"host") or b"").decode("latin-1")
        login = Answer(
            303,
            b"",
            b"text/plain",
            [
                (
                    b"Location",
                    f"{self.primary_url}/login?redirect="
                    f"{quote(_app_url(scheme, host, head), safe='')}".encode(),
                )
            ],
        )
        if not session:
            return login
        now = self.clock()
        try:
            async with CoderV1Client(self.primary_url, session, timeout=10.0) as primary:
                user = await primary.me()
        except CoderAuthError:
            return login
        except CoderAPIError as error:
            log.warning("checking a user session with the primary failed: %s", error)
            return _page(502, "Bad Gateway", "The primary could not be reached.")
        self.users[self._key(session)] = (user, now + _V1_CACHE_SECONDS)
        try:
            address = await self.satellite.find_workspace_address(app.username, app.workspace)
        except CoderNotFound:
            return _page(404, "Not Found", "The workspace was not found.")
        except CoderAPIError as error:
            log.warning("workspace address lookup failed: %s", error)
            return _page(502, "Bad Gateway", "The workspace could not be reached.")
        self.addresses[(app.username, app.workspace)] = (address, now + _V1_CACHE_SECONDS)
        if not self._allowed(user, address):
            return _page(403, "Forbidden", "You do not have access to this workspace.")
        return target_for(address, app) or _page(404, "Not Found", "The application was not found.")
