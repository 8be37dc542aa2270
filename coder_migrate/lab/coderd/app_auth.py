"""``GET /api/v2/applications/auth-redirect``: the primary's half of the login hand-off.

As coderd's ``workspaceApplicationAuth`` (coderd/workspaceapps.go) and the middleware in
front of it do it:

- no session (``Coder-Session-Token`` header or ``coder_session_token`` cookie): ``303`` to
  ``<access URL>/login?message=...&redirect=<path and query>``
  (``httpmw.RedirectToLogin``, coderd/httpmw/apikey.go);
- no ``redirect_uri``: ``400 {"message": "Missing redirect_uri query parameter."}``;
- a ``redirect_uri`` whose host is neither the primary's wildcard app host nor a workspace
  proxy's access URL host or wildcard host (``ValidWorkspaceAppHostname``): ``400``;
  otherwise the scheme is forced to the matching access URL's;
- a new session for the user (an ``application_connect``-scoped API key in Coder),
  encrypted as ``EncryptedAPIKeyPayload`` (:func:`~coder_migrate.providers.coder.app_tokens.
  encrypt_api_key`: JWE A256GCMKW/A256GCM with the newest ``workspace_apps_api_key`` key),
  set as ``coder_application_connect_api_key_35e783`` with ``url.Values.Set`` and encoded
  with ``Encode`` (keys sorted), then ``303 See Other`` to that URL.

The proxy's half (decrypt, cookie, redirect to the clean URL) is in coder_migrate.proxy.auth.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from aiohttp import web

from coder_migrate.lab.coderd.core import ApiError, Emulator
from coder_migrate.providers.coder.app_tokens import (
    API_KEY_FEATURE,
    API_KEY_QUERY_PARAMETER,
    encrypt_api_key,
)
from coder_migrate.providers.coder.models_v2 import CryptoKey

__all__ = ["AppAuthRedirect", "go_query_encode", "wildcard_matches"]

AUTH_REDIRECT_PATH = "/api/v2/applications/auth-redirect"
# The login middleware's message when no session came with the request (ASSUMED wording;
# the shape of the redirect is what clients rely on).
_LOGIN_MESSAGE = "You must be logged in to access this page."


def go_query_encode(pairs: list[tuple[str, str]]) -> str:
    """Go's ``url.Values.Encode``: keys sorted (values keep their order), query-escaped."""
    ordered = sorted(pairs, key=lambda pair: pair[0])
    return urlencode(ordered, quote_via=quote, safe="")


def wildcard_matches(pattern: str, host: str) -> bool:
    """``*.apps.example.com`` / ``*--apps.example.com`` against a host (no port): the star
    is one DNS label's worth (``appurl.CompileHostnamePattern``)."""
    if not pattern:
        return False
    regex = re.escape(pattern.lower()).replace(r"\*", "[^.]+")
    return re.fullmatch(regex, host.lower()) is not None


class AppAuthRedirect:
    """The route, registered ahead of the other v2 routes by the emulator's server."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    def routes(self, app: web.Application) -> None:
        app.router.add_get(AUTH_REDIRECT_PATH, self.handle)

    def _scheme_for(self, hostport: str) -> str:
        """The scheme to force for a redirect host, or "" when the host is not allowed."""
        host = hostport.split(":")[0].lower()
        primary = urlsplit(self.emu.access_url)
        if wildcard_matches(self.emu.config.wildcard_hostname, host):
            return primary.scheme
        for proxy in self.emu.store.all("proxy"):
            if proxy["deleted"] or not proxy["url"]:
                continue  # a proxy that never registered has no URL to match
            url = urlsplit(proxy["url"])
            if (url.hostname or "").lower() == host or wildcard_matches(
                proxy["wildcard_hostname"], host
            ):
                return url.scheme
        return ""

    def _newest_key(self) -> CryptoKey:
        keys = [k for k in self.emu.store.all("crypto_key") if k["feature"] == API_KEY_FEATURE]
        return CryptoKey.model_validate(max(keys, key=lambda k: int(k["sequence"])))

    async def handle(self, request: web.Request) -> web.Response:
        token = request.headers.get("Coder-Session-Token") or request.cookies.get(
            "coder_session_token"
        )
        user = self.emu.user_for_token(token)
        if user is None:
            login = go_query_encode([("message", _LOGIN_MESSAGE), ("redirect", request.path_qs)])
            raise web.HTTPSeeOther(location=f"{self.emu.access_url}/login?{login}")
        redirect_uri = request.query.get("redirect_uri", "")
        if not redirect_uri:
            raise ApiError(400, "Missing redirect_uri query parameter.")
        parts = urlsplit(redirect_uri)
        scheme = self._scheme_for(parts.netloc) if parts.netloc else ""
        if not scheme:
            raise ApiError(
                400,
                "Invalid redirect_uri.",
                detail="The redirect_uri query parameter must be the primary wildcard app "
                "hostname, a workspace proxy access URL or a workspace proxy wildcard app "
                "hostname.",
            )
        handed = encrypt_api_key(self.emu.new_session(user["id"]), key=self._newest_key())
        query: list[tuple[str, str]] = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k != API_KEY_QUERY_PARAMETER
        ]
        query.append((API_KEY_QUERY_PARAMETER, handed))
        location = urlunsplit((scheme, parts.netloc, parts.path, go_query_encode(query), ""))
        raise web.HTTPSeeOther(location=location)
