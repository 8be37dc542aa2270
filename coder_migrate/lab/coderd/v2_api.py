"""Coder v2 routes of the emulator: the routing table, build info, regions and the workspace
proxies' lifecycle (reference: coder-v2-workspace-proxies.md; docs/coder-emulator.md lists
each rule with its source). The proxies' own routes, the app flows and the user routes live in
``v2_proxy_routes``, ``v2_apps`` and ``v2_users``.

Sources (coder/coder): ``enterprise/coderd/workspaceproxy.go`` (``postWorkspaceProxy``,
``patchWorkspaceProxy``, ``patchPrimaryWorkspaceProxy``, ``deleteWorkspaceProxy``),
``codersdk/workspaceproxy.go`` (``CreateWorkspaceProxyRequest``: ``name`` required;
``PatchWorkspaceProxy``: ``id``, ``name``, ``display_name``, ``icon`` required).
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from coder_migrate.lab.coderd.core import ApiError, Emulator, now_iso
from coder_migrate.lab.coderd.health import HealthPoller
from coder_migrate.lab.coderd.store import Doc
from coder_migrate.lab.coderd.v2_apps import V2Apps
from coder_migrate.lab.coderd.v2_common import Proxies, read_body
from coder_migrate.lab.coderd.v2_provisioners import V2Provisioners
from coder_migrate.lab.coderd.v2_proxy_routes import V2ProxyRoutes
from coder_migrate.lab.coderd.v2_users import V2Users
from coder_migrate.providers.coder.models_v2 import PRIMARY_PROXY_NAME

__all__ = ["V2Api"]

_NOT_FOUND = "Resource not found or you do not have access to this resource"
_CREATE_FIELDS: Any = {"name": "string", "display_name": "string", "icon": "string"}
_PATCH_FIELDS: Any = {"id": "uuid", "name": "string", "display_name": "string", "icon": "string",
                      "regenerate_token": "bool"}


class V2Api:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.proxies = Proxies(emulator)
        self.health = HealthPoller(emulator)
        self.users = V2Users(emulator)
        self.proxy_routes = V2ProxyRoutes(emulator, self.proxies, self.health)
        self.apps = V2Apps(emulator, self.proxies)
        self.provisioners = V2Provisioners(emulator)

    def routes(self, app: web.Application) -> None:
        r = app.router
        base = "/api/v2/workspaceproxies"
        r.add_get("/api/v2/buildinfo", self.buildinfo)
        self.users.routes(app)
        r.add_get("/api/v2/regions", self.regions)
        self.apps.routes(app)
        r.add_get(base, self.list_proxies)
        r.add_post(base, self.create_proxy)
        self.proxy_routes.routes(app)
        r.add_get(f"{base}/{{proxy}}", self.get_proxy)
        r.add_patch(f"{base}/{{proxy}}", self.patch_proxy)
        r.add_delete(f"{base}/{{proxy}}", self.delete_proxy)
        self.provisioners.routes(app)

    # -- helpers -----------------------------------------------------------------------------

    def _owner(self, request: web.Request) -> Doc:
        self.proxies.licensed()
        user = self.emu.require_user(request)
        if not self.emu.is_site_admin(user):
            raise ApiError(403, "Forbidden.")  # ASSUMED: coderd's authz answers differ by route
        return user

    def _proxy_param(self, key: str) -> Doc:
        """The proxy a URL names (httpmw.ExtractWorkspaceProxyParam): 404 when unknown."""
        proxy = self.proxies.lookup(key)
        if proxy is None or proxy["deleted"]:
            raise ApiError(404, _NOT_FOUND)
        return proxy

    def _check_new_name(self, name: str) -> None:
        """postWorkspaceProxy: "primary" is reserved (any case); a live proxy's name is taken
        (the database's unique index on lower(name)). No other rule on the name."""
        if name.lower() == PRIMARY_PROXY_NAME:
            raise ApiError(
                400, 'The name "primary" is reserved for the primary region.',
                detail="Cannot name a workspace proxy 'primary'.",
                validations=[{"field": "name", "detail": "Reserved name"}],
            )
        if self._taken(name):
            raise ApiError(409, f'Workspace proxy with name "{name}" already exists.')

    def _taken(self, name: str, exclude_id: str = "") -> bool:
        return any(p["name"].lower() == name.lower() and p["id"] != exclude_id
                   for p in self.proxies.live())

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

    async def regions(self, request: web.Request) -> web.Response:
        self.emu.require_user(request)
        regions = [self.proxies.region_json(self.proxies.primary_json())]
        if self.emu.mode == "v2":
            regions += [
                self.proxies.region_json(self.proxies.proxy_json(p))
                for p in self.proxies.live()
                if not p["derp_only"]
            ]
        return web.json_response({"regions": regions})

    async def list_proxies(self, request: web.Request) -> web.Response:
        self.proxies.licensed()
        self.emu.require_user(request)
        regions = [self.proxies.primary_json()]
        regions += [self.proxies.proxy_json(p) for p in self.proxies.live()]
        return web.json_response({"regions": regions})

    async def get_proxy(self, request: web.Request) -> web.Response:
        self.proxies.licensed()
        self.emu.require_user(request)
        key = request.match_info["proxy"]
        if self.proxies.is_primary(key):
            return web.json_response(self.proxies.primary_json())
        proxy = self.proxies.lookup(key)  # by uuid, a deleted proxy is still shown
        if proxy is None:
            raise ApiError(404, _NOT_FOUND)
        return web.json_response(self.proxies.proxy_json(proxy))

    async def create_proxy(self, request: web.Request) -> web.Response:
        self._owner(request)
        body = await read_body(request, "codersdk.CreateWorkspaceProxyRequest", _CREATE_FIELDS,
                               required=("name",))
        self._check_new_name(body["name"])
        proxy_id = str(uuid.uuid4())
        token, hashed = self.proxies.new_token(proxy_id)
        region_ids = [int(p["region_id"]) for p in self.emu.store.all("proxy")]
        now = now_iso()
        proxy = {
            "id": proxy_id,
            "name": body["name"],
            # Stored as given: an empty display name stays empty, as in coderd.
            "display_name": body["display_name"],
            "icon": body["icon"],
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
            # The answer's status is checked at the creation time (postWorkspaceProxy).
            "status": {"status": "unregistered", "report": {"errors": [], "warnings": []},
                       "checked_at": now},
        }
        self.emu.store.put("proxy", proxy)
        self.health.trigger()
        return web.json_response(
            {"proxy": self.proxies.proxy_json(proxy), "proxy_token": token}, status=201
        )

    async def patch_proxy(self, request: web.Request) -> web.Response:
        self._owner(request)
        key = request.match_info["proxy"]
        primary = self.proxies.is_primary(key)
        proxy = None if primary else self._proxy_param(key)
        body = await read_body(request, "codersdk.PatchWorkspaceProxy", _PATCH_FIELDS,
                               required=("id", "name", "display_name", "icon"))
        token = ""
        if body["regenerate_token"]:
            token, hashed = self.proxies.new_token(
                str(self.emu.store.meta("deployment_id")) if proxy is None else proxy["id"]
            )
        if proxy is None:
            return web.json_response({"proxy": self._patch_primary(body), "proxy_token": token})
        if self._taken(body["name"], exclude_id=proxy["id"]):
            # patchWorkspaceProxy handles no unique violation: the database error is a 500.
            raise ApiError(500, "An internal server error occurred.", detail=(
                'update workspace proxy: pq: duplicate key value violates unique constraint '
                '"workspace_proxies_lower_name_idx"'))
        proxy.update(name=body["name"], display_name=body["display_name"], icon=body["icon"],
                     updated_at=now_iso())
        if token:
            proxy["token_hash"] = hashed
        self.emu.store.put("proxy", proxy)
        self.health.trigger()
        return web.json_response({"proxy": self.proxies.proxy_json(proxy), "proxy_token": token})

    def _patch_primary(self, body: dict[str, Any]) -> dict[str, Any]:
        """patchPrimaryWorkspaceProxy: the name cannot change; display name and icon can."""
        if body["name"] and body["name"] != PRIMARY_PROXY_NAME:
            raise ApiError(
                400,
                "Cannot update name of default primary proxy, did you mean to update the "
                "'display name'?",
                validations=[{"field": "name",
                              "detail": "Cannot update name of default primary proxy"}],
            )
        self.emu.store.set_meta("primary_display_name", body["display_name"])
        self.emu.store.set_meta("primary_icon", body["icon"])
        return self.proxies.primary_json()

    async def delete_proxy(self, request: web.Request) -> web.Response:
        self._owner(request)
        key = request.match_info["proxy"]
        if self.proxies.is_primary(key):
            raise ApiError(400, "Cannot delete primary proxy")
        proxy = self._proxy_param(key)
        proxy.update(deleted=True, updated_at=now_iso(), replicas={})
        self.emu.store.put("proxy", proxy)
        self.health.trigger()
        return web.json_response({"message": "Proxy has been deleted!"})
