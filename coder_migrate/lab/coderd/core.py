"""The emulator's shared core: state, seed, auth, error bodies, views."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from coder_migrate.lab.coderd.agents import AgentBackends
from coder_migrate.lab.coderd.config import EmulatorConfig, Mode
from coder_migrate.lab.coderd.faults import Faults
from coder_migrate.lab.coderd.store import Doc, Store
from coder_migrate.providers.coder import satellite_key

__all__ = ["ZERO_TIME", "ApiError", "Emulator", "error_response", "now_iso", "token_hash"]

ZERO_TIME = "0001-01-01T00:00:00Z"
V1_VERSIONS = {"v1.21": "1.21.0", "v1.20": "1.20.0"}
V2_VERSION = "v2.25.0"


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiError(Exception):
    """An error answer in the mode's documented shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str = "",
        detail: str = "",
        details: Any = None,
        validations: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.detail = detail
        self.details = details
        self.validations = validations or []


_V1_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found"}


def error_response(mode: Mode, error: ApiError) -> web.Response:
    if mode.startswith("v1"):
        code = error.code or _V1_CODES.get(
            error.status, "conflict" if error.status == 409 else "internal"
        )
        body: dict[str, Any] = {
            "error": {"msg": error.message, "code": code, "details": error.details}
        }
    else:
        # codersdk.Response: `detail` and `validations` are omitempty.
        body = {"message": error.message}
        if error.detail:
            body["detail"] = error.detail
        if error.validations:
            body["validations"] = error.validations
    return web.json_response(body, status=error.status)


class Emulator:
    """State and behaviour shared by the v1 and v2 route modules."""

    def __init__(self, *, mode: Mode, config: EmulatorConfig, store: Store, access_url: str):
        self.mode: Mode = mode
        self.config = config
        self.store = store
        self.access_url = access_url.rstrip("/")
        self.faults = Faults(config.faults)
        self.agents = AgentBackends()
        self.health_interval = config.health_interval_seconds
        self.build_step_seconds = config.build_step_seconds
        #: The version of the primary release the lab deployed, once it named one.
        self.release_version: str | None = None
        from coder_migrate.lab.coderd.v2_provisioners import ProvisionerDaemons

        #: External provisioner daemons and the PSK (its hash) the primary takes.
        self.provisioners = ProvisionerDaemons()

    @property
    def is_v1(self) -> bool:
        return self.mode.startswith("v1")

    @property
    def version(self) -> str:
        if self.release_version is not None:
            return self.release_version
        return V1_VERSIONS.get(self.mode, V2_VERSION)

    # -- seed --------------------------------------------------------------------------------

    def seed(self) -> str:
        """Create what the config names and the store lacks; return the admin token."""
        self._seed_keys()
        self._seed_users()
        admin = self.store.find("user", username="admin")
        assert admin is not None
        token = self.store.meta("admin_token")
        if token is None:
            token = self.new_session(admin["id"])
            self.store.set_meta("admin_token", token)
        self._seed_orgs()
        self._seed_providers()
        self._seed_workspaces()
        return str(token)

    def _seed_keys(self) -> None:
        store = self.store
        if store.meta("deployment_id") is None:
            store.set_meta("deployment_id", str(uuid.uuid4()))
            store.set_meta("derp_mesh_key", secrets.token_hex(32))
        if store.meta("satellite_private_key") is None:
            store.set_meta("satellite_private_key", satellite_key.generate_private_key_pem())
        for feature, size in (("workspace_apps_token", 64), ("workspace_apps_api_key", 32)):
            if not [k for k in store.all("crypto_key") if k["feature"] == feature]:
                store.put("crypto_key", {
                    "id": f"{feature}:1", "feature": feature, "secret": secrets.token_hex(size),
                    "sequence": 1, "starts_at": now_iso(), "deletes_at": ZERO_TIME,
                })

    def _seed_users(self) -> None:
        for user in self.config.users:
            if self.store.find("user", username=user.username) is None:
                self.store.put("user", {
                    "id": str(uuid.uuid4()),
                    "username": user.username,
                    "email": user.email or f"{user.username}@coder.lab.internal",
                    "name": user.name or user.username,
                    "roles": user.roles,
                    "password_hash": token_hash(user.password) if user.password else "",
                    "created_at": now_iso(),
                    "updated_at": now_iso(),
                })

    def _seed_orgs(self) -> None:
        for org in self.config.orgs:
            doc = self.store.find("org", name=org.name) or {
                "id": str(uuid.uuid4()), "name": org.name, "member_ids": [],
            }
            for member in org.members:
                user_doc = self.store.find("user", username=member)
                if user_doc and user_doc["id"] not in doc["member_ids"]:
                    doc["member_ids"].append(user_doc["id"])
            self.store.put("org", doc)

    def _seed_providers(self) -> None:
        for provider in self.config.providers or []:
            if self.store.find("provider", name=provider.name) is not None:
                continue
            self.store.put("provider", {
                "id": str(uuid.uuid4()),
                "name": provider.name,
                "status": provider.status,
                "built_in": False,
                "envproxy_access_url": provider.envproxy_access_url,
                "devurl_host": provider.devurl_host,
                "org_whitelist": [],
                "enable_net_v2": provider.enable_net_v2,
                "config": {
                    "cluster_address": provider.cluster_address,
                    "default_namespace": provider.default_namespace,
                    "storage_class": "",
                    "cluster_domain_suffix": ".svc.cluster.local",
                    "ssh_enabled": True,
                },
            })

    def _seed_workspaces(self) -> None:
        store = self.store
        for workspace in self.config.workspaces or []:
            if store.find("workspace", name=workspace.name) is not None:
                continue
            owner = store.find("user", username=workspace.owner)
            org_doc = store.find("org", name=workspace.org)
            provider_doc = store.find("provider", name=workspace.provider)
            store.put("workspace", {
                "id": str(uuid.uuid4()),
                "name": workspace.name,
                "organization_id": org_doc["id"] if org_doc else "",
                "user_id": owner["id"] if owner else "",
                "image_id": str(uuid.uuid4()),
                "image_tag": workspace.image_tag,
                "updating": False,
                "container_status": "ON",
                "last_built_at": now_iso(),
                "resource_pool_id": provider_doc["id"] if provider_doc else "",
                "created_at": now_iso(),
                "updated_at": now_iso(),
                "agents": [
                    {"id": str(uuid.uuid4()), "name": agent.name,
                     "apps": [a.model_dump() for a in agent.apps],
                     "ports": [p.model_dump() for p in agent.ports]}
                    for agent in workspace.agents
                ],
            })

    async def start_agents(self) -> None:
        for workspace in self.store.all("workspace"):
            for agent in workspace.get("agents", []):
                await self.agents.start_agent(agent)

    # -- sessions and users ------------------------------------------------------------------

    def new_session(self, user_id: str, *, name: str = "") -> str:
        """A new session token (``<10 chars>-<22 chars>`` like Coder's API keys); *name* is
        what a v1 ``tokens create`` called it."""
        key_id = secrets.token_hex(5)
        secret = secrets.token_urlsafe(16)[:22]
        self.store.put("session", {"id": key_id, "user_id": user_id, "hash": token_hash(secret),
                                   "name": name, "last_used": now_iso()})
        return f"{key_id}-{secret}"

    def user_for_token(self, token: str | None) -> Doc | None:
        if not token or "-" not in token:
            return None
        key_id, _, secret = token.partition("-")
        session = self.store.get("session", key_id)
        if session is None or not secrets.compare_digest(session["hash"], token_hash(secret)):
            return None
        return self.store.get("user", session["user_id"])

    def require_user(self, request: web.Request) -> Doc:
        if self.is_v1:
            # The cookie name is ASSUMED (docs/coder-emulator.md): a satellite may forward it.
            token = request.headers.get("Session-Token") or request.cookies.get("session_token")
        else:
            token = request.headers.get("Coder-Session-Token") or request.cookies.get(
                "coder_session_token"
            )
        user = self.user_for_token(token)
        if user is None:
            if self.is_v1:
                raise ApiError(401, "authentication required: invalid or missing session token")
            raise ApiError(
                401,
                "You must be logged in to access this resource."
                if not token
                else "Invalid API key.",
                detail="" if not token else "The session token is invalid or has expired.",
            )
        return user

    def require_admin(self, request: web.Request) -> Doc:
        token = request.headers.get("Session-Token") or request.headers.get("Coder-Session-Token")
        if not token or token != self.store.meta("admin_token"):
            raise ApiError(401, "the emulator admin token is required")
        user = self.store.find("user", username="admin")
        assert user is not None
        return user

    @staticmethod
    def is_site_admin(user: Doc) -> bool:
        return bool({"site-admin", "owner"} & set(user.get("roles", [])))

    def user_by_name_or_id(self, value: str) -> Doc | None:
        return self.store.get("user", value) or self.store.find("user", username=value)

    # -- workspaces and agents ---------------------------------------------------------------

    def agent_address(self, workspace: Doc, agent: Doc) -> dict[str, Any]:
        owner = self.store.get("user", workspace["user_id"]) or {}
        backend = self.agents.backends.get(agent["id"])
        return {
            "agent_id": agent["id"],
            "agent_name": agent["name"],
            "workspace_id": workspace["id"],
            "workspace_name": workspace["name"],
            "owner": owner.get("username", ""),
            "owner_id": workspace["user_id"],
            "apps": dict(backend.apps) if backend else {},
            "ports": dict(backend.ports) if backend else {},
            "port_protocols": dict(backend.port_protocols) if backend else {},
            "pty_url": backend.pty_url if backend else "",
        }

    def find_agent(self, agent_id: str) -> tuple[Doc, Doc] | None:
        for workspace in self.store.all("workspace"):
            for agent in workspace.get("agents", []):
                if agent["id"] == agent_id:
                    return workspace, agent
        return None

    def find_workspace(self, owner: Doc, name_or_id: str) -> Doc | None:
        for workspace in self.store.all("workspace"):
            if workspace["user_id"] == owner["id"] and name_or_id in (
                workspace["id"],
                workspace["name"],
            ):
                return workspace
        return None

    @staticmethod
    def pick_agent(workspace: Doc, name_or_id: str) -> Doc | None:
        agents: list[Doc] = workspace.get("agents", [])
        if not name_or_id:
            return agents[0] if len(agents) == 1 else None
        return next((a for a in agents if name_or_id in (a["id"], a["name"])), None)

    def all_agent_addresses(self) -> list[dict[str, Any]]:
        return [
            self.agent_address(workspace, agent)
            for workspace in self.store.all("workspace")
            for agent in workspace.get("agents", [])
        ]
