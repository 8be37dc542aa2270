"""Typed shapes of the Coder v2 API (reference: coder-v2-workspace-proxies.md §1-§3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = [
    "AgentAddress",
    "BuildInfo",
    "CreatedProxy",
    "CryptoKey",
    "ProxyHealthStatus",
    "ProxyRegistration",
    "ProxyReport",
    "ProxyStatus",
    "Region",
    "V2User",
    "WorkspaceProxy",
]

ProxyHealthStatus = Literal["ok", "unregistered", "unreachable", "unhealthy", "unknown"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class BuildInfo(_Model):
    version: str
    external_url: str = ""
    dashboard_url: str = ""
    workspace_proxy: bool = False
    deployment_id: str = ""


class ProvisionerDaemon(_Model):
    """codersdk.ProvisionerDaemon: an external provisioner the primary knows."""

    id: str
    name: str
    created_at: datetime | None = None
    last_seen_at: datetime | None = None
    version: str = ""
    provisioners: list[str] = []
    tags: dict[str, str] = {}


class V2Role(_Model):
    name: str
    display_name: str = ""


class V2User(_Model):
    id: str
    username: str
    email: str = ""
    name: str = ""
    roles: list[V2Role] = Field(default_factory=list)


class ProxyReport(_Model):
    errors: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class ProxyStatus(_Model):
    status: ProxyHealthStatus
    report: ProxyReport = Field(default_factory=ProxyReport)
    checked_at: datetime | None = None


class Region(_Model):
    id: str
    name: str
    display_name: str = ""
    icon_url: str = ""
    healthy: bool = False
    path_app_url: str = ""
    wildcard_hostname: str = ""


PRIMARY_PROXY_NAME = "primary"
"""The name Coder v2 reserves for the primary's own entry in the workspace proxy list."""


class WorkspaceProxy(Region):
    derp_enabled: bool = True
    derp_only: bool = False
    status: ProxyStatus
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted: bool = False
    version: str = ""

    @property
    def is_primary(self) -> bool:
        """The primary's own entry (Coder lists it among the proxies), not a proxy."""
        return self.name == PRIMARY_PROXY_NAME


class CreatedProxy(_Model):
    """A proxy with its token; the token is only ever returned here (create, regenerate)."""

    proxy: WorkspaceProxy
    proxy_token: SecretStr


class CryptoKey(_Model):
    feature: str
    secret: SecretStr
    sequence: int
    starts_at: datetime
    deletes_at: datetime | None = None


class ProxyRegistration(_Model):
    """The answer to ``me/register``."""

    derp_mesh_key: SecretStr
    derp_region_id: int
    derp_map: dict[str, Any] = Field(default_factory=dict)
    derp_force_websockets: bool = False
    sibling_replicas: list[dict[str, Any]] = Field(default_factory=list)


class AgentAddress(_Model):
    """Where an agent's servers listen (ASSUMED contract, docs/coder-emulator.md)."""

    agent_id: str
    agent_name: str
    workspace_id: str
    workspace_name: str
    owner: str
    owner_id: str
    apps: dict[str, str] = Field(default_factory=dict)
    ports: dict[str, str] = Field(default_factory=dict)
    # "http" or "tcp" per port; a port missing here is not TCP (never tunnelled).
    port_protocols: dict[str, str] = Field(default_factory=dict)
    pty_url: str = ""

    def tcp_address(self, port: str) -> str | None:
        """``host:port`` of ``port`` when the agent declares it as TCP, else ``None``."""
        return self.ports.get(port) if self.port_protocols.get(port) == "tcp" else None
