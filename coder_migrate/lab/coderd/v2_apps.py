"""The app flows a user's browser drives on the primary (reference: coder-v2-workspace-proxies.md
§1, §3): the login hand-off to a proxy (``auth-redirect``) and terminal tokens.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from aiohttp import web

from coder_migrate.lab.coderd.core import ApiError, Emulator
from coder_migrate.lab.coderd.v2_common import Proxies, html_error
from coder_migrate.providers.coder.app_tokens import (
    API_KEY_FEATURE,
    API_KEY_QUERY_PARAMETER,
    AppRequest,
    encrypt_api_key,
    sign_app_token,
)

__all__ = ["V2Apps"]


class V2Apps:
    def __init__(self, emulator: Emulator, proxies: Proxies) -> None:
        self.emu = emulator
        self.proxies = proxies

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/v2/applications/reconnecting-pty-signed-token", self.pty_token)
        r.add_get("/api/v2/applications/auth-redirect", self.auth_redirect)

    async def auth_redirect(self, request: web.Request) -> web.Response:
        """Hand a logged-in user's session to a proxy as an encrypted API key (ASSUMED layout).

        Not logged in: 303 to the primary's ``/login``. A redirect URI that is not a live
        proxy's host: 400 HTML.
        """
        target = request.query.get("redirect_uri", "")
        token = request.headers.get("Coder-Session-Token") or request.cookies.get(
            "coder_session_token"
        )
        user = self.emu.user_for_token(token)
        if user is None:
            here = quote(request.path_qs, safe="")
            raise web.HTTPSeeOther(location=f"{self.emu.access_url}/login?redirect={here}")
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not self.proxies.is_proxy_host(
            (parts.hostname or "").lower()
        ):
            return html_error(400, "Bad Request", "The redirect URI is not a workspace proxy.")
        handed = encrypt_api_key(
            self.emu.new_session(user["id"]), key=self.proxies.app_token_key(API_KEY_FEATURE)
        )
        query = [*parse_qsl(parts.query, keep_blank_values=True), (API_KEY_QUERY_PARAMETER, handed)]
        location = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
        raise web.HTTPSeeOther(location=location)

    async def pty_token(self, request: web.Request) -> web.Response:
        user = self.emu.require_user(request)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as error:
            raise ApiError(400, "Request body must be valid JSON.", detail=str(error)) from None
        body = body if isinstance(body, dict) else {}
        found = self.emu.find_agent(str(body.get("agentID") or ""))
        if found is None:
            raise ApiError(404, "Agent not found.")
        workspace, agent = found
        if workspace["user_id"] != user["id"] and not self.emu.is_site_admin(user):
            raise ApiError(403, "Forbidden.")
        owner = self.emu.store.get("user", workspace["user_id"]) or {}
        app_request = AppRequest(
            access_method="terminal",
            base_path=urlsplit(str(body.get("url") or "")).path,
            username_or_id=str(owner.get("username", "")),
            workspace_name_or_id=workspace["name"],
            agent_name_or_id=agent["name"],
        )
        token = sign_app_token(
            key=self.proxies.app_token_key(),
            request=app_request,
            user_id=user["id"],
            username=user["username"],
            workspace_id=workspace["id"],
            agent_id=agent["id"],
        )
        return web.json_response({"signed_token": token})
