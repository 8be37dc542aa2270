"""The routes a workspace proxy calls with its ``Coder-External-Proxy-Token``
(``/api/v2/workspaceproxies/me/*``; reference: coder-v2-workspace-proxies.md §1, §3), and the
project's agent-address routes (ASSUMED, docs/coder-emulator.md).
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from coder_migrate.lab.coderd.core import ApiError, Emulator, now_iso
from coder_migrate.lab.coderd.health import HealthPoller
from coder_migrate.lab.coderd.store import Doc
from coder_migrate.lab.coderd.v2_common import NIL_UUID, Proxies, app_not_found, html_error
from coder_migrate.providers.coder.app_tokens import AppRequest, sign_app_token

__all__ = ["DERP_REGION_START", "V2ProxyRoutes"]

_CRYPTO_FEATURES = ("workspace_apps_token", "workspace_apps_api_key")
DERP_REGION_START = 10000


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, "Request body must be valid JSON.", detail=str(error)) from None
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be valid JSON.", detail="not a JSON object")
    return body


class V2ProxyRoutes:
    def __init__(self, emulator: Emulator, proxies: Proxies, health: HealthPoller) -> None:
        self.emu = emulator
        self.proxies = proxies
        self.health = health

    def routes(self, app: web.Application) -> None:
        r = app.router
        base = "/api/v2/workspaceproxies/me"
        r.add_post(f"{base}/register", self.register)
        r.add_post(f"{base}/deregister", self.deregister)
        r.add_get(f"{base}/crypto-keys", self.crypto_keys)
        r.add_post(f"{base}/issue-signed-app-token", self.issue_app_token)
        r.add_post(f"{base}/app-stats", self.app_stats)
        r.add_get(f"{base}/agents", self.find_agent)
        r.add_get(f"{base}/agents/{{agent_id}}", self.agent)

    @staticmethod
    def _registration_fields(body: dict[str, Any]) -> tuple[str, str, str, bool, bool]:
        """access_url, wildcard_hostname, replica_id, derp_enabled, derp_only; 400 as the
        primary answers a bad registration."""
        access_url = str(body.get("access_url") or "")
        parts = urlsplit(access_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ApiError(
                400,
                "Access URL must be a valid http(s) URL with an empty path or '/'.",
                detail=f"access_url {access_url!r}",
            )
        wildcard = str(body.get("wildcard_hostname") or "")
        if not Proxies.valid_wildcard(wildcard):
            raise ApiError(400, "Wildcard hostname is invalid.", detail=f"{wildcard!r}")
        try:
            replica = str(uuid.UUID(str(body.get("replica_id") or "")))
        except ValueError:
            replica = NIL_UUID
        if replica == NIL_UUID:
            raise ApiError(400, "Replica ID is required.")
        derp_enabled, derp_only = bool(body.get("derp_enabled")), bool(body.get("derp_only"))
        if derp_only and not derp_enabled:
            raise ApiError(400, "DerpOnly cannot be true when DerpEnabled is false.")
        return access_url, wildcard, replica, derp_enabled, derp_only

    async def register(self, request: web.Request) -> web.Response:
        proxy = self.proxies.authenticated(request)
        body = await _json_object(request)
        access_url, wildcard, replica, derp_enabled, derp_only = self._registration_fields(body)
        now = now_iso()
        replicas: dict[str, Any] = proxy.get("replicas", {})
        replicas[replica] = {
            "id": replica,
            "hostname": str(body.get("hostname") or ""),
            "created_at": replicas.get(replica, {}).get("created_at", now),
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
                "sibling_replicas": [r for rid, r in replicas.items() if rid != replica],
            },
            status=201,
        )

    def _derp_node(self, region_id: int, name: str, url: str) -> dict[str, Any]:
        parts = urlsplit(url)
        return {
            "Name": name,
            "RegionID": region_id,
            "HostName": parts.hostname or "",
            "DERPPort": parts.port or (443 if parts.scheme == "https" else 80),
            "STUNPort": -1,
            "ForceHTTP": parts.scheme == "http",
        }

    def _derp_map(self) -> dict[str, Any]:
        regions: dict[str, Any] = {
            "999": {
                "EmbeddedRelay": True,
                "RegionID": 999,
                "RegionCode": "coder",
                "RegionName": "Coder Embedded Relay",
                "Nodes": [self._derp_node(999, "999b", self.emu.access_url)],
            }
        }
        for proxy in self.proxies.live():
            if proxy["status"]["status"] != "ok" or not proxy["derp_enabled"]:
                continue
            region_id = DERP_REGION_START + int(proxy["region_id"])
            regions[str(region_id)] = {
                "RegionID": region_id,
                "RegionCode": f"coder_{proxy['name']}",
                "RegionName": proxy["display_name"],
                "Nodes": [self._derp_node(region_id, f"{region_id}a", proxy["url"])],
            }
        return {"Regions": regions, "OmitDefaultRegions": True}

    async def deregister(self, request: web.Request) -> web.Response:
        proxy = self.proxies.authenticated(request)
        body = await _json_object(request)
        replicas: dict[str, Any] = proxy.get("replicas", {})
        replicas.pop(str(body.get("replica_id") or ""), None)
        proxy.update(replicas=replicas, updated_at=now_iso())
        self.emu.store.put("proxy", proxy)
        self.health.trigger()
        return web.Response(status=204)

    async def crypto_keys(self, request: web.Request) -> web.Response:
        self.proxies.authenticated(request)
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
        self.proxies.authenticated(request)
        body = await _json_object(request)
        stats = body.get("stats")
        if not isinstance(stats, list):
            raise ApiError(400, "stats must be a list")
        total = int(self.emu.store.meta("app_stats_received") or 0) + len(stats)
        self.emu.store.set_meta("app_stats_received", total)
        return web.Response(status=204)

    async def issue_app_token(self, request: web.Request) -> web.StreamResponse:
        self.proxies.authenticated(request)
        body = await _json_object(request)
        try:
            app_request = AppRequest.model_validate(body.get("app_request") or {})
        except ValueError:
            return html_error(400, "Bad Request", "Invalid app request.")
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
        if not self._authorized(session_user, owner, app_request):
            return app_not_found()
        token = sign_app_token(
            key=self.proxies.app_token_key(),
            request=app_request,
            user_id=session_user["id"],
            username=session_user["username"],
            workspace_id=workspace["id"],
            agent_id=agent["id"],
            app_url=app_url,
        )
        return web.json_response({"signed_token_str": token}, status=201)

    def _authorized(self, user: Doc, owner: Doc, app_request: AppRequest) -> bool:
        """coderd/workspaceapps/db.go ``authorizeRequest`` with the default deployment flags
        (no path-app sharing, no site-owner access to path apps; apps share at level "owner"):
        the workspace's owner always; a site owner (role ``owner``, RBAC) for subdomain apps
        and terminals, never for another user's path app."""
        if user["id"] == owner["id"]:
            return True
        is_path_app = app_request.access_method == "path"
        return not is_path_app and self.emu.is_site_admin(user)

    def _resolve_app(self, app_request: AppRequest) -> tuple[Doc, Doc, Doc, str] | web.Response:
        owner = self.emu.user_by_name_or_id(app_request.username_or_id)
        workspace = (
            self.emu.find_workspace(owner, app_request.workspace_name_or_id) if owner else None
        )
        if owner is None or workspace is None:
            return app_not_found()
        agent = self.emu.pick_agent(workspace, app_request.agent_name_or_id)
        if agent is None:
            return app_not_found()
        address = self.emu.agent_address(workspace, agent)
        if app_request.access_method == "terminal":
            return owner, workspace, agent, ""
        target = app_request.app_slug_or_port.removesuffix("s")
        if app_request.app_slug_or_port in address["apps"]:
            return owner, workspace, agent, address["apps"][app_request.app_slug_or_port]
        if target in address["ports"]:
            return owner, workspace, agent, f"http://{address['ports'][target]}"
        return app_not_found()

    async def agent(self, request: web.Request) -> web.Response:
        self.proxies.authenticated(request)
        found = self.emu.find_agent(request.match_info["agent_id"])
        if found is None:
            raise ApiError(404, "Agent not found.")
        return web.json_response(self.emu.agent_address(*found))

    async def find_agent(self, request: web.Request) -> web.Response:
        self.proxies.authenticated(request)
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
