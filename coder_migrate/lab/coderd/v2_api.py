"""Coder v2 routes of the emulator (reference: coder-v2-workspace-proxies.md)."""

from __future__ import annotations

import re
import secrets
import uuid
from html import escape
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from aiohttp import web

from coder_migrate.lab.coderd.core import ZERO_TIME, ApiError, Emulator, now_iso, token_hash
from coder_migrate.lab.coderd.health import HealthPoller
from coder_migrate.lab.coderd.store import Doc
from coder_migrate.providers.coder.app_tokens import (
    API_KEY_FEATURE,
    API_KEY_QUERY_PARAMETER,
    AppRequest,
    encrypt_api_key,
    sign_app_token,
)
from coder_migrate.providers.coder.models_v2 import PRIMARY_PROXY_NAME, CryptoKey
from coder_migrate.providers.coder.transport import PREMIUM_MESSAGE

__all__ = ["V2Api"]

_NAME_RULE = re.compile(r"^[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*$")
_HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_NIL_UUID = "00000000-0000-0000-0000-000000000000"
_CRYPTO_FEATURES = ("workspace_apps_token", "workspace_apps_api_key")
DERP_REGION_START = 10000


def _valid_wildcard(pattern: str) -> bool:
    """``*.<host>`` or ``*<suffix>.<host>`` (Coder's hostname pattern rule, ASSUMED)."""
    if not pattern:
        return True
    pattern = pattern.lower()
    if not pattern.startswith("*") or pattern.count("*") != 1 or pattern.endswith("."):
        return False
    first, _, rest = pattern[1:].partition(".")
    if not rest or (first and not re.fullmatch(r"[a-z0-9-]+", first)):
        return False
    return all(_HOST_LABEL.match(label) for label in rest.split("."))


def _html_error(status: int, title: str, text: str) -> web.Response:
    body = (
        f"<!doctype html><html><head><title>{escape(title)}</title></head>"
        f"<body><h1>{escape(title)}</h1><p>{escape(text)}</p></body></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html")


class V2Api:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.health = HealthPoller(emulator)

    def routes(self, app: web.Application) -> None:
        r = app.router
        base = "/api/v2/workspaceproxies"
        r.add_get("/api/v2/buildinfo", self.buildinfo)
        r.add_get("/api/v2/users/me", self.user_me)
        r.add_get("/api/v2/regions", self.regions)
        r.add_post("/api/v2/applications/reconnecting-pty-signed-token", self.pty_token)
        r.add_get("/api/v2/applications/auth-redirect", self.auth_redirect)
        r.add_get(base, self.list_proxies)
        r.add_post(base, self.create_proxy)
        r.add_post(f"{base}/me/register", self.register)
        r.add_post(f"{base}/me/deregister", self.deregister)
        r.add_get(f"{base}/me/crypto-keys", self.crypto_keys)
        r.add_post(f"{base}/me/issue-signed-app-token", self.issue_app_token)
        r.add_post(f"{base}/me/app-stats", self.app_stats)
        r.add_get(f"{base}/me/agents", self.find_agent)
        r.add_get(f"{base}/me/agents/{{agent_id}}", self.agent)
        r.add_get(f"{base}/{{proxy}}", self.get_proxy)
        r.add_patch(f"{base}/{{proxy}}", self.patch_proxy)
        r.add_delete(f"{base}/{{proxy}}", self.delete_proxy)

    # -- views -------------------------------------------------------------------------------

    def primary_json(self) -> dict[str, Any]:
        now = now_iso()
        deployment = str(self.emu.store.meta("deployment_id"))
        display = self.emu.store.meta("primary_display_name") or "Default"
        icon = self.emu.store.meta("primary_icon") or "/emojis/1f3e1.png"
        return {
            "id": deployment,
            "name": "primary",
            "display_name": display,
            "icon_url": icon,
            "healthy": True,
            "path_app_url": self.emu.access_url,
            "wildcard_hostname": self.emu.config.wildcard_hostname,
            "derp_enabled": True,
            "derp_only": False,
            "status": {"status": "ok", "report": {"errors": [], "warnings": []}, "checked_at": now},
            "created_at": now,
            "updated_at": now,
            "deleted": False,
            "version": self.emu.version,
        }

    @staticmethod
    def proxy_json(proxy: Doc) -> dict[str, Any]:
        status = proxy["status"]
        return {
            "id": proxy["id"],
            "name": proxy["name"],
            "display_name": proxy["display_name"],
            "icon_url": proxy["icon"],
            "healthy": status["status"] == "ok",
            "path_app_url": proxy["url"],
            "wildcard_hostname": proxy["wildcard_hostname"],
            "derp_enabled": proxy["derp_enabled"],
            "derp_only": proxy["derp_only"],
            "status": {
                "status": status["status"],
                "report": {
                    "errors": list(status["report"]["errors"]),
                    "warnings": list(status["report"]["warnings"]),
                },
                "checked_at": status["checked_at"],
            },
            "created_at": proxy["created_at"],
            "updated_at": proxy["updated_at"],
            "deleted": proxy["deleted"],
            "version": proxy["version"],
        }

    @staticmethod
    def region_json(proxy: dict[str, Any]) -> dict[str, Any]:
        keys = ("id", "name", "display_name", "icon_url", "healthy", "path_app_url")
        return {**{k: proxy[k] for k in keys}, "wildcard_hostname": proxy["wildcard_hostname"]}

    # -- helpers -----------------------------------------------------------------------------

    def _licensed(self) -> None:
        if self.emu.mode == "v2-unlicensed":
            raise ApiError(403, PREMIUM_MESSAGE)

    def _live_proxies(self) -> list[Doc]:
        return [p for p in self.emu.store.all("proxy") if not p["deleted"]]

    def _lookup(self, key: str) -> Doc | None:
        """By uuid (also soft-deleted) or by name (live only, any case)."""
        try:
            uuid.UUID(key)
        except ValueError:
            return next((p for p in self._live_proxies() if p["name"].lower() == key.lower()), None)
        return self.emu.store.get("proxy", key)

    def _is_primary(self, key: str) -> bool:
        return key.lower() == PRIMARY_PROXY_NAME or key == str(self.emu.store.meta("deployment_id"))

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "Request body must be valid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Request body must be a JSON object.")
        return body

    def _check_name(self, name: Any, *, exclude_id: str = "") -> str:
        if not isinstance(name, str) or not name:
            raise ApiError(400, "Validation failed.", detail="name is required")
        if name.lower() == PRIMARY_PROXY_NAME:
            raise ApiError(400, "Invalid name.", detail='The name "primary" is reserved.')
        if len(name) > 32 or not _NAME_RULE.match(name):
            raise ApiError(
                400, "Validation failed.", detail="name must be alphanumeric with hyphens, ≤ 32"
            )
        if any(
            p["name"].lower() == name.lower() and p["id"] != exclude_id
            for p in self._live_proxies()
        ):
            raise ApiError(409, f"Workspace proxy with name {name!r} already exists.")
        return name

    def _authenticated_proxy(self, request: web.Request) -> Doc:
        self._licensed()
        token = request.headers.get("Coder-External-Proxy-Token", "")
        if not token:
            raise ApiError(401, "Missing required external proxy token")
        proxy_id, _, secret = token.partition(":")
        proxy = self.emu.store.get("proxy", proxy_id) if proxy_id else None
        if proxy is None:
            raise ApiError(401, "Invalid external proxy token", detail="Proxy not found.")
        if proxy["deleted"]:
            raise ApiError(401, "Invalid external proxy token", detail="Proxy has been deleted.")
        if not secrets.compare_digest(proxy["token_hash"], token_hash(secret)):
            raise ApiError(
                401, "Invalid external proxy token", detail="Invalid proxy token secret."
            )
        return proxy

    def _new_token(self, proxy_id: str) -> tuple[str, str]:
        secret = secrets.token_hex(32)
        return f"{proxy_id}:{secret}", token_hash(secret)

    def _app_token_key(self, feature: str = "workspace_apps_token") -> CryptoKey:
        keys = [k for k in self.emu.store.all("crypto_key") if k["feature"] == feature]
        newest = max(keys, key=lambda k: int(k["sequence"]))
        return CryptoKey.model_validate(newest)

    def _is_proxy_host(self, host: str) -> bool:
        """The host of a live proxy's access URL, or one under its wildcard hostname."""
        for proxy in self._live_proxies():
            if proxy["url"] and urlsplit(proxy["url"]).hostname == host:
                return True
            pattern = proxy["wildcard_hostname"]
            if pattern:
                regex = re.escape(pattern.lower()).replace(r"\*", "[^.]+")
                if re.fullmatch(regex, host):
                    return True
        return False

    # -- handlers ----------------------------------------------------------------------------

    async def buildinfo(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "external_url": "https://github.com/coder/coder",
                "version": self.emu.version,
                "dashboard_url": self.emu.access_url,
                "workspace_proxy": False,
                "agent_api_version": "2.0",
                "provisioner_api_version": "1.0",
                "upgrade_message": "",
                "deployment_id": str(self.emu.store.meta("deployment_id")),
                "telemetry": False,
            }
        )

    async def user_me(self, request: web.Request) -> web.Response:
        user = self.emu.require_user(request)
        roles = [{"name": "owner", "display_name": "Owner"}] if self.emu.is_site_admin(user) else []
        return web.json_response(
            {
                "id": user["id"],
                "username": user["username"],
                "email": user["email"],
                "name": user["name"],
                "roles": roles,
                "status": "active",
                "created_at": user["created_at"],
            }
        )

    async def regions(self, request: web.Request) -> web.Response:
        self.emu.require_user(request)
        regions = [self.region_json(self.primary_json())]
        if self.emu.mode == "v2":
            regions += [
                self.region_json(self.proxy_json(p))
                for p in self._live_proxies()
                if not p["derp_only"]
            ]
        return web.json_response({"regions": regions})

    async def list_proxies(self, request: web.Request) -> web.Response:
        self._licensed()
        self.emu.require_user(request)
        regions = [self.primary_json()] + [self.proxy_json(p) for p in self._live_proxies()]
        return web.json_response({"regions": regions})

    async def get_proxy(self, request: web.Request) -> web.Response:
        self._licensed()
        self.emu.require_user(request)
        key = request.match_info["proxy"]
        if self._is_primary(key):
            return web.json_response(self.primary_json())
        proxy = self._lookup(key)
        if proxy is None:
            raise ApiError(404, "Resource not found or you do not have access to this resource")
        return web.json_response(self.proxy_json(proxy))

    async def create_proxy(self, request: web.Request) -> web.Response:
        self._licensed()
        user = self.emu.require_user(request)
        if not self.emu.is_site_admin(user):
            raise ApiError(403, "Forbidden.")
        body = await self._body(request)
        name = self._check_name(body.get("name"))
        proxy_id = str(uuid.uuid4())
        token, hashed = self._new_token(proxy_id)
        region_ids = [int(p["region_id"]) for p in self.emu.store.all("proxy")]
        now = now_iso()
        proxy = {
            "id": proxy_id,
            "name": name,
            "display_name": str(body.get("display_name") or name),
            "icon": str(body.get("icon") or ""),
            "url": "",
            "wildcard_hostname": "",
            "derp_enabled": True,
            "derp_only": False,
            "token_hash": hashed,
            "deleted": False,
            "created_at": now,
            "updated_at": now,
            "version": "",
            "region_id": max(region_ids, default=0) + 1,
            "replicas": {},
            "status": {
                "status": "unregistered",
                "report": {"errors": [], "warnings": []},
                "checked_at": ZERO_TIME,
            },
        }
        self.emu.store.put("proxy", proxy)
        self.health.trigger()
        return web.json_response(
            {"proxy": self.proxy_json(proxy), "proxy_token": token}, status=201
        )

    async def patch_proxy(self, request: web.Request) -> web.Response:
        self._licensed()
        user = self.emu.require_user(request)
        if not self.emu.is_site_admin(user):
            raise ApiError(403, "Forbidden.")
        key = request.match_info["proxy"]
        body = await self._body(request)
        if self._is_primary(key):
            if body.get("name") not in (None, "primary"):
                raise ApiError(400, "Cannot rename the primary region.")
            if body.get("regenerate_token"):
                raise ApiError(400, "Cannot regenerate the token of the primary region.")
            if body.get("display_name"):
                self.emu.store.set_meta("primary_display_name", str(body["display_name"]))
            if body.get("icon"):
                self.emu.store.set_meta("primary_icon", str(body["icon"]))
            return web.json_response({"proxy": self.primary_json(), "proxy_token": ""})
        proxy = self._lookup(key)
        if proxy is None or proxy["deleted"]:
            raise ApiError(404, "Resource not found or you do not have access to this resource")
        if "name" in body and body["name"] != proxy["name"]:
            proxy["name"] = self._check_name(body["name"], exclude_id=proxy["id"])
        if body.get("display_name"):
            proxy["display_name"] = str(body["display_name"])
        if body.get("icon") is not None:
            proxy["icon"] = str(body["icon"])
        token = ""
        if body.get("regenerate_token"):
            token, proxy["token_hash"] = self._new_token(proxy["id"])
        proxy["updated_at"] = now_iso()
        self.emu.store.put("proxy", proxy)
        self.health.trigger()
        return web.json_response({"proxy": self.proxy_json(proxy), "proxy_token": token})

    async def delete_proxy(self, request: web.Request) -> web.Response:
        self._licensed()
        user = self.emu.require_user(request)
        if not self.emu.is_site_admin(user):
            raise ApiError(403, "Forbidden.")
        key = request.match_info["proxy"]
        if self._is_primary(key):
            raise ApiError(400, "Cannot delete the primary region.")
        proxy = self._lookup(key)
        if proxy is None or proxy["deleted"]:
            raise ApiError(404, "Resource not found or you do not have access to this resource")
        proxy.update(deleted=True, updated_at=now_iso(), replicas={})
        self.emu.store.put("proxy", proxy)
        self.health.trigger()
        return web.json_response({"message": "Proxy has been deleted!"})

    async def register(self, request: web.Request) -> web.Response:
        proxy = self._authenticated_proxy(request)
        body = await self._body(request)
        access_url = str(body.get("access_url") or "")
        parts = urlsplit(access_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ApiError(
                400,
                "Access URL must be a valid http(s) URL with an empty path or '/'.",
                detail=f"access_url {access_url!r}",
            )
        wildcard = str(body.get("wildcard_hostname") or "")
        if not _valid_wildcard(wildcard):
            raise ApiError(400, "Wildcard hostname is invalid.", detail=f"{wildcard!r}")
        replica_id = str(body.get("replica_id") or "")
        try:
            replica_uuid = str(uuid.UUID(replica_id))
        except ValueError:
            replica_uuid = _NIL_UUID
        if replica_uuid == _NIL_UUID:
            raise ApiError(400, "Replica ID is required.")
        derp_enabled = bool(body.get("derp_enabled"))
        derp_only = bool(body.get("derp_only"))
        if derp_only and not derp_enabled:
            raise ApiError(400, "DerpOnly cannot be true when DerpEnabled is false.")
        now = now_iso()
        replicas: dict[str, Any] = proxy.get("replicas", {})
        replicas[replica_uuid] = {
            "id": replica_uuid,
            "hostname": str(body.get("hostname") or ""),
            "created_at": replicas.get(replica_uuid, {}).get("created_at", now),
            "relay_address": str(body.get("replica_relay_address") or ""),
            "region_id": int(proxy["region_id"]),
            "error": str(body.get("replica_error") or ""),
            "database_latency": 0,
        }
        proxy.update(
            url=access_url.rstrip("/"),
            wildcard_hostname=wildcard,
            derp_enabled=derp_enabled,
            derp_only=derp_only,
            version=str(body.get("version") or ""),
            replicas=replicas,
            updated_at=now,
        )
        self.emu.store.put("proxy", proxy)
        self.health.trigger()
        return web.json_response(
            {
                "derp_mesh_key": str(self.emu.store.meta("derp_mesh_key")),
                "derp_region_id": int(proxy["region_id"]),
                "derp_map": self._derp_map(),
                "derp_force_websockets": False,
                "sibling_replicas": [r for rid, r in replicas.items() if rid != replica_uuid],
            },
            status=201,
        )

    def _derp_map(self) -> dict[str, Any]:
        primary = urlsplit(self.emu.access_url)
        regions: dict[str, Any] = {
            "999": {
                "EmbeddedRelay": True,
                "RegionID": 999,
                "RegionCode": "coder",
                "RegionName": "Coder Embedded Relay",
                "Nodes": [
                    {
                        "Name": "999b",
                        "RegionID": 999,
                        "HostName": primary.hostname or "",
                        "DERPPort": primary.port or 80,
                        "STUNPort": -1,
                        "ForceHTTP": primary.scheme == "http",
                    }
                ],
            }
        }
        for proxy in self._live_proxies():
            if proxy["status"]["status"] != "ok" or not proxy["derp_enabled"]:
                continue
            region_id = DERP_REGION_START + int(proxy["region_id"])
            url = urlsplit(proxy["url"])
            regions[str(region_id)] = {
                "RegionID": region_id,
                "RegionCode": f"coder_{proxy['name']}",
                "RegionName": proxy["display_name"],
                "Nodes": [
                    {
                        "Name": f"{region_id}a",
                        "RegionID": region_id,
                        "HostName": url.hostname or "",
                        "DERPPort": url.port or (443 if url.scheme == "https" else 80),
                        "STUNPort": -1,
                        "ForceHTTP": url.scheme == "http",
                    }
                ],
            }
        return {"Regions": regions, "OmitDefaultRegions": True}

    async def deregister(self, request: web.Request) -> web.Response:
        proxy = self._authenticated_proxy(request)
        body = await self._body(request)
        replicas: dict[str, Any] = proxy.get("replicas", {})
        replicas.pop(str(body.get("replica_id") or ""), None)
        proxy.update(replicas=replicas, updated_at=now_iso())
        self.emu.store.put("proxy", proxy)
        self.health.trigger()
        return web.Response(status=204)

    async def crypto_keys(self, request: web.Request) -> web.Response:
        self._authenticated_proxy(request)
        feature = request.query.get("feature", "")
        if feature not in _CRYPTO_FEATURES:
            raise ApiError(
                400,
                f"Invalid feature: {feature!r}",
                detail="feature must be one of " + ", ".join(_CRYPTO_FEATURES),
            )
        keys = [
            {k: key[k] for k in ("feature", "secret", "deletes_at", "sequence", "starts_at")}
            for key in self.emu.store.all("crypto_key")
            if key["feature"] == feature
        ]
        return web.json_response({"crypto_keys": keys})

    async def app_stats(self, request: web.Request) -> web.Response:
        self._authenticated_proxy(request)
        body = await self._body(request)
        stats = body.get("stats")
        if not isinstance(stats, list):
            raise ApiError(400, "stats must be a list")
        total = int(self.emu.store.meta("app_stats_received") or 0) + len(stats)
        self.emu.store.set_meta("app_stats_received", total)
        return web.Response(status=204)

    async def issue_app_token(self, request: web.Request) -> web.StreamResponse:
        self._authenticated_proxy(request)
        body = await self._body(request)
        try:
            app_request = AppRequest.model_validate(body.get("app_request") or {})
        except ValueError:
            return _html_error(400, "Bad Request", "Invalid app request.")
        session_user = self.emu.user_for_token(str(body.get("session_token") or ""))
        if session_user is None:
            target = str(body.get("path_app_base_url") or "") + str(body.get("app_path") or "")
            if body.get("app_hostname"):
                target = f"https://{body['app_hostname']}{body.get('app_path') or '/'}"
            location = (
                f"{self.emu.access_url}/api/v2/applications/auth-redirect?redirect_uri="
                f"{quote(target, safe='')}"
            )
            raise web.HTTPSeeOther(location=location)
        resolved = self._resolve_app(app_request)
        if isinstance(resolved, web.Response):
            return resolved
        owner, workspace, agent, app_url = resolved
        if session_user["id"] != owner["id"] and not self.emu.is_site_admin(session_user):
            return _html_error(403, "Forbidden", "You do not have access to this application.")
        token = sign_app_token(
            key=self._app_token_key(),
            request=app_request,
            user_id=session_user["id"],
            username=session_user["username"],
            workspace_id=workspace["id"],
            agent_id=agent["id"],
            app_url=app_url,
        )
        return web.json_response({"signed_token_str": token}, status=201)

    def _resolve_app(self, app_request: AppRequest) -> tuple[Doc, Doc, Doc, str] | web.Response:
        owner = self.emu.user_by_name_or_id(app_request.username_or_id)
        workspace = (
            self.emu.find_workspace(owner, app_request.workspace_name_or_id) if owner else None
        )
        if owner is None or workspace is None:
            return _html_error(404, "Not Found", "Workspace not found.")
        agent = self.emu.pick_agent(workspace, app_request.agent_name_or_id)
        if agent is None:
            return _html_error(404, "Not Found", "Agent not found.")
        address = self.emu.agent_address(workspace, agent)
        if app_request.access_method == "terminal":
            return owner, workspace, agent, ""
        target = app_request.app_slug_or_port.removesuffix("s")
        if app_request.app_slug_or_port in address["apps"]:
            return owner, workspace, agent, address["apps"][app_request.app_slug_or_port]
        if target in address["ports"]:
            return owner, workspace, agent, f"http://{address['ports'][target]}"
        return _html_error(404, "Not Found", "Application not found.")

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
        if parts.scheme not in ("http", "https") or not self._is_proxy_host(
            (parts.hostname or "").lower()
        ):
            return _html_error(400, "Bad Request", "The redirect URI is not a workspace proxy.")
        handed = encrypt_api_key(
            self.emu.new_session(user["id"]), key=self._app_token_key(API_KEY_FEATURE)
        )
        query = [*parse_qsl(parts.query, keep_blank_values=True), (API_KEY_QUERY_PARAMETER, handed)]
        location = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
        raise web.HTTPSeeOther(location=location)

    async def pty_token(self, request: web.Request) -> web.Response:
        user = self.emu.require_user(request)
        body = await self._body(request)
        agent_id = str(body.get("agentID") or "")
        found = self.emu.find_agent(agent_id)
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
            key=self._app_token_key(),
            request=app_request,
            user_id=user["id"],
            username=user["username"],
            workspace_id=workspace["id"],
            agent_id=agent["id"],
        )
        return web.json_response({"signed_token": token})

    async def agent(self, request: web.Request) -> web.Response:
        self._authenticated_proxy(request)
        found = self.emu.find_agent(request.match_info["agent_id"])
        if found is None:
            raise ApiError(404, "Agent not found.")
        return web.json_response(self.emu.agent_address(*found))

    async def find_agent(self, request: web.Request) -> web.Response:
        self._authenticated_proxy(request)
        owner = self.emu.user_by_name_or_id(request.query.get("owner", ""))
        workspace = (
            self.emu.find_workspace(owner, request.query.get("workspace", "")) if owner else None
        )
        agent = (
            self.emu.pick_agent(workspace, request.query.get("agent", "")) if workspace else None
        )
        if workspace is None or agent is None:
            raise ApiError(404, "Agent not found.")
        return web.json_response(self.emu.agent_address(workspace, agent))
