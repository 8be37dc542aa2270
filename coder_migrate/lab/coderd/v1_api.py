"""Coder v1 (1.20/1.21) routes of the emulator (reference: coder-v1-api.md)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from aiohttp import web

from coder_migrate.lab.coderd.core import ApiError, Emulator, now_iso, token_hash
from coder_migrate.lab.coderd.store import Doc
from coder_migrate.lab.coderd.v1_builds import V1Builds
from coder_migrate.providers.coder import satellite_key

__all__ = ["V1Api"]

_UPDATE_FIELDS = (
    "image_id",
    "image_tag",
    "cpu_cores",
    "memory_gb",
    "disk_gb",
    "gpus",
    "template_id",
)
_V1_ROLES = ("site-admin", "site-auditor", "site-manager", "site-member")


class V1Api:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.builds = V1Builds(emulator)

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api", self.api_root)
        r.add_get("/cem-healthz", self.healthz)
        r.add_post("/auth/basic/login", self.login)
        r.add_get("/api/v0/users", self.list_users)
        r.add_get("/api/v0/users/me", self.user_me)
        r.add_get("/api/v0/users/{id}", self.user_by_id)
        r.add_get("/api/v0/orgs", self.orgs)
        r.add_get("/api/private/satellites", self.list_satellites)
        r.add_post("/api/private/satellites", self.create_satellite)
        r.add_get("/api/private/satellites/key", self.satellite_key)
        r.add_get("/api/private/satellites/me/workspaces", self.satellite_find_workspace)
        r.add_get("/api/private/satellites/me/workspaces/{id}", self.satellite_workspace)
        r.add_delete("/api/private/satellites/{id}", self.delete_satellite)
        r.add_get("/api/private/resource-pools", self.list_providers)
        r.add_get("/api/private/resource-pools/{id}", self.get_provider)
        r.add_patch("/api/private/resource-pools/{id}", self.patch_provider)
        r.add_get("/api/private/resource-pools/{id}/workspaces", self.provider_workspaces)
        r.add_get("/api/v0/workspaces", self.list_workspaces)
        r.add_get("/api/v0/workspaces/{id}", self.get_workspace)
        r.add_patch("/api/v0/workspaces/{id}", self.patch_workspace)
        r.add_get("/api/private/workspaces/{id}/watch-update", self.watch_update)
        r.add_get("/api/v0/images/{id}", self.get_image)
        r.add_get("/api/v0/api-keys/{user}", self.list_api_keys)
        r.add_post("/api/v0/api-keys/{user}", self.create_api_key)

    async def resume_builds(self) -> None:
        """Keep each workspace's creation build log; builds cut short by a restart start again."""
        self._ensure_images()
        self.builds.keep_creation_logs()
        await self.builds.resume()

    async def stop(self) -> None:
        await self.builds.stop()

    # -- views -------------------------------------------------------------------------------

    @staticmethod
    def user_json(user: Doc) -> dict[str, Any]:
        return {
            "id": user["id"],
            "email": user["email"],
            "username": user["username"],
            "name": user["name"],
            "roles": [r for r in user.get("roles", []) if r in _V1_ROLES] or ["site-member"],
            "temporary_password": False,
            "login_type": "built-in",
            "key_regenerated_at": user["created_at"],
            "created_at": user["created_at"],
            "updated_at": user["updated_at"],
        }

    def provider_json(self, provider: Doc) -> dict[str, Any]:
        body = {
            k: provider[k]
            for k in (
                "id",
                "name",
                "status",
                "built_in",
                "envproxy_access_url",
                "devurl_host",
                "org_whitelist",
                "config",
            )
        }
        if self.emu.mode == "v1.21":
            body["enable_net_v2"] = provider["enable_net_v2"]
        return body

    @staticmethod
    def workspace_json(workspace: Doc) -> dict[str, Any]:
        return {
            "id": workspace["id"],
            "name": workspace["name"],
            "organization_id": workspace["organization_id"],
            "user_id": workspace["user_id"],
            "image_id": workspace["image_id"],
            "image_tag": workspace["image_tag"],
            "cpu_cores": 2,
            "memory_gb": 4,
            "disk_gb": 30,
            "gpus": 0,
            "updating": workspace["updating"],
            "latest_stat": {
                "time": workspace["updated_at"],
                "last_online": workspace["updated_at"],
                "container_status": workspace["container_status"],
                "stat_error": "",
                "cpu_usage": 0,
                "memory_total": 4 << 30,
                "memory_usage": 0,
                "disk_total": 30 << 30,
                "disk_used": 0,
            },
            "rebuild_messages": [],
            "created_at": workspace["created_at"],
            "updated_at": workspace["updated_at"],
            "last_opened_at": workspace["updated_at"],
            "last_connection_at": workspace["updated_at"],
            "last_built_at": workspace["last_built_at"],
            "auto_off_threshold": 0,
            "use_container_vm": False,
            "resource_pool_id": workspace["resource_pool_id"],
        }

    # -- helpers -----------------------------------------------------------------------------

    def _require_satellites(self) -> None:
        if self.emu.mode != "v1.21":
            raise ApiError(404, "route not found")

    def _get(self, kind: str, doc_id: str, what: str) -> Doc:
        doc = self.emu.store.get(kind, doc_id)
        if doc is None:
            raise ApiError(404, f"{what} not found")
        return doc

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "request body must be JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    def _satellite_for(self, request: web.Request) -> Doc:
        self._require_satellites()
        fingerprint = request.headers.get(satellite_key.FINGERPRINT_HEADER, "")
        satellite = (
            self.emu.store.find("satellite", fingerprint=fingerprint) if fingerprint else None
        )
        if satellite is None or not satellite_key.verify_satellite_request(
            satellite["public_key"], request.method, request.path, request.headers
        ):
            raise ApiError(401, "request is not signed by a registered satellite")
        return satellite

    # -- handlers ----------------------------------------------------------------------------

    async def api_root(self, request: web.Request) -> web.Response:
        self.emu.require_user(request)
        return web.json_response({})

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def user_me(self, request: web.Request) -> web.Response:
        return web.json_response(self.user_json(self.emu.require_user(request)))

    async def login(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        user = self.emu.store.find("user", email=str(body.get("email") or ""))
        password = str(body.get("password") or "")
        if (
            user is None
            or not user.get("password_hash")
            or not secrets.compare_digest(user["password_hash"], token_hash(password))
        ):
            raise ApiError(401, "invalid email or password")
        return web.json_response({"session_token": self.emu.new_session(user["id"])})

    async def list_users(self, request: web.Request) -> web.Response:
        self.emu.require_user(request)
        return web.json_response([self.user_json(u) for u in self.emu.store.all("user")])

    async def user_by_id(self, request: web.Request) -> web.Response:
        self.emu.require_user(request)
        return web.json_response(
            self.user_json(self._get("user", request.match_info["id"], "user"))
        )

    async def orgs(self, request: web.Request) -> web.Response:
        self.emu.require_user(request)
        result = []
        for org in self.emu.store.all("org"):
            members = [self.emu.store.get("user", m) for m in org["member_ids"]]
            result.append(
                {
                    "id": org["id"],
                    "name": org["name"],
                    "members": [self.user_json(m) for m in members if m],
                }
            )
        return web.json_response(result)

    async def list_satellites(self, request: web.Request) -> web.Response:
        self._require_satellites()
        self.emu.require_user(request)
        data = [
            {"id": s["id"], "name": s["name"], "fingerprint": s["fingerprint"]}
            for s in self.emu.store.all("satellite")
        ]
        return web.json_response({"data": data})

    async def create_satellite(self, request: web.Request) -> web.Response:
        self._require_satellites()
        user = self.emu.require_user(request)
        if not ({"site-admin", "site-manager"} & set(user["roles"])):
            raise ApiError(403, "site manager role required to register satellites")
        body = await self._body(request)
        name, key = body.get("name"), body.get("public_key")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "name is required", details=[{"field": "name"}])
        if not isinstance(key, str) or not key.strip():
            raise ApiError(400, "public_key is required", details=[{"field": "public_key"}])
        try:
            fingerprint = satellite_key.fingerprint(key)
        except ValueError:
            raise ApiError(
                400,
                "public_key must be a PEM ECDSA P-256 public key",
                details=[{"field": "public_key"}],
            ) from None
        if self.emu.store.find("satellite", name=name):
            raise ApiError(409, f"a satellite named {name!r} already exists")
        if self.emu.store.find("satellite", fingerprint=fingerprint):
            raise ApiError(409, "a satellite with this public key is already registered")
        doc = {
            "id": str(uuid.uuid4()),
            "name": name,
            "fingerprint": fingerprint,
            "public_key": key,
            "created_at": now_iso(),
        }
        self.emu.store.put("satellite", doc)
        data = {"id": doc["id"], "name": name, "fingerprint": fingerprint}
        return web.json_response({"data": data}, status=201)

    async def delete_satellite(self, request: web.Request) -> web.Response:
        self._require_satellites()
        self.emu.require_user(request)
        satellite = self._get("satellite", request.match_info["id"], "satellite")
        self.emu.store.delete("satellite", satellite["id"])
        return web.json_response({})

    async def satellite_key(self, _request: web.Request) -> web.Response:
        """The emulator's own demo satellite key (no auth, like a satellite serves it)."""
        self._require_satellites()
        private_pem = str(self.emu.store.meta("satellite_private_key"))
        public_pem = satellite_key.public_key_pem(private_pem)
        return web.json_response(
            {"key": public_pem, "fingerprint": satellite_key.fingerprint(public_pem)}
        )

    async def satellite_workspace(self, request: web.Request) -> web.Response:
        self._satellite_for(request)
        workspace = self._get("workspace", request.match_info["id"], "workspace")
        return web.json_response(self.emu.agent_address(workspace, workspace["agents"][0]))

    async def satellite_find_workspace(self, request: web.Request) -> web.Response:
        self._satellite_for(request)
        owner = self.emu.user_by_name_or_id(request.query.get("owner", ""))
        workspace = self.emu.find_workspace(owner, request.query.get("name", "")) if owner else None
        if workspace is None:
            raise ApiError(404, "workspace not found")
        return web.json_response(self.emu.agent_address(workspace, workspace["agents"][0]))

    async def list_providers(self, request: web.Request) -> web.Response:
        self.emu.require_user(request)
        providers = [self.provider_json(p) for p in self.emu.store.all("provider")]
        return web.json_response({"kubernetes": providers})

    async def get_provider(self, request: web.Request) -> web.Response:
        self.emu.require_user(request)
        provider = self._get("provider", request.match_info["id"], "workspace provider")
        return web.json_response(self.provider_json(provider))

    async def patch_provider(self, request: web.Request) -> web.Response:
        user = self.emu.require_user(request)
        if not self.emu.is_site_admin(user):
            raise ApiError(403, "site admin role required to edit workspace providers")
        provider = self._get("provider", request.match_info["id"], "workspace provider")
        body = await self._body(request)
        allowed = {"name", "enable_net_v2"} if self.emu.mode == "v1.21" else {"name"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(unknown)}")
        if "name" in body:
            if not isinstance(body["name"], str) or not body["name"]:
                raise ApiError(400, "name must be a non-empty string")
            provider["name"] = body["name"]
        if "enable_net_v2" in body:
            if not isinstance(body["enable_net_v2"], bool):
                raise ApiError(400, "enable_net_v2 must be a boolean")
            provider["enable_net_v2"] = body["enable_net_v2"]
        self.emu.store.put("provider", provider)
        return web.json_response(self.provider_json(provider))

    async def provider_workspaces(self, request: web.Request) -> web.Response:
        self.emu.require_user(request)
        provider = self._get("provider", request.match_info["id"], "workspace provider")
        return web.json_response(
            [
                self.workspace_json(w)
                for w in self.emu.store.all("workspace")
                if w["resource_pool_id"] == provider["id"]
            ]
        )

    async def list_workspaces(self, request: web.Request) -> web.Response:
        user = self.emu.require_user(request)
        orgs = set(filter(None, request.query.get("orgs", "").split(",")))
        users = set(filter(None, request.query.get("users", "").split(",")))
        result = []
        for workspace in self.emu.store.all("workspace"):
            if not self.emu.is_site_admin(user) and workspace["user_id"] != user["id"]:
                continue
            if orgs and workspace["organization_id"] not in orgs:
                continue
            if users and workspace["user_id"] not in users:
                continue
            result.append(self.workspace_json(workspace))
        return web.json_response(result)

    def _visible_workspace(self, request: web.Request, user: Doc) -> Doc:
        workspace = self._get("workspace", request.match_info["id"], "workspace")
        if not self.emu.is_site_admin(user) and workspace["user_id"] != user["id"]:
            raise ApiError(404, "workspace not found")
        return workspace

    async def get_workspace(self, request: web.Request) -> web.Response:
        user = self.emu.require_user(request)
        return web.json_response(self.workspace_json(self._visible_workspace(request, user)))

    async def patch_workspace(self, request: web.Request) -> web.Response:
        user = self.emu.require_user(request)
        workspace = self._visible_workspace(request, user)
        body = await self._body(request)
        unknown = sorted(set(body) - set(_UPDATE_FIELDS))
        if unknown:
            raise ApiError(400, f"unknown field(s): {', '.join(unknown)}")
        for key in ("image_id", "image_tag"):
            if body.get(key) is not None:
                workspace[key] = str(body[key])
        workspace = self.builds.start(workspace)
        return web.json_response(self.workspace_json(workspace))

    async def watch_update(self, request: web.Request) -> web.StreamResponse:
        user = self.emu.require_user(request)
        return await self.builds.watch(request, self._visible_workspace(request, user))

    # -- images and API keys (what the real CLI's `workspaces ls` and `tokens` call) ---------

    def _ensure_images(self) -> None:
        """Each workspace's image, as an imported image of its org (coder-sdk image.go)."""
        for workspace in self.emu.store.all("workspace"):
            if self.emu.store.get("image", workspace["image_id"]) is None:
                self.emu.store.put("image", {
                    "id": workspace["image_id"], "organization_id": workspace["organization_id"],
                    "repository": "codercom/enterprise-base",  # ASSUMED: Coder's base image
                    "tag": workspace["image_tag"], "created_at": workspace["created_at"],
                })

    async def get_image(self, request: web.Request) -> web.Response:
        self.emu.require_user(request)
        image = self._get("image", request.match_info["id"], "image")
        tag = {
            "image_id": image["id"], "tag": image["tag"], "latest_hash": "",
            "hash_last_updated_at": image["created_at"], "os_release": None,
            "workspaces": None, "updated_at": image["created_at"],
            "created_at": image["created_at"],
        }
        return web.json_response({
            "id": image["id"], "organization_id": image["organization_id"],
            "repository": image["repository"], "description": "", "url": "", "registry": None,
            "default_tag": tag, "default_cpu_cores": 2, "default_memory_gb": 4,
            "default_disk_gb": 30, "deprecated": False, "created_at": image["created_at"],
            "updated_at": image["created_at"],
        })

    def _token_owner(self, request: web.Request) -> Doc:
        """``/api/v0/api-keys/{user}``: ``me``, yourself, or anyone for a site admin."""
        caller = self.emu.require_user(request)
        key = request.match_info["user"]
        if key in ("me", caller["id"]):
            return caller
        if not self.emu.is_site_admin(caller):
            raise ApiError(403, "you may only manage your own API keys")
        return self._get("user", key, "user")

    async def list_api_keys(self, request: web.Request) -> web.Response:
        user = self._token_owner(request)
        keys = [
            {"id": s["id"], "name": s.get("name", ""), "application": False,
             "user_id": user["id"], "last_used": s.get("last_used", user["created_at"])}
            for s in self.emu.store.all("session") if s["user_id"] == user["id"]
        ]
        return web.json_response(keys)

    async def create_api_key(self, request: web.Request) -> web.Response:
        user = self._token_owner(request)
        body = await self._body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "name is required", details=[{"field": "name"}])
        key = self.emu.new_session(user["id"], name=name)
        return web.json_response({"key": key})
