"""Typed shapes of the Coder v1 (1.20/1.21) API (reference: coder-v1-api.md §1-§5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BuildEvent",
    "CoderVersion",
    "ContainerStatus",
    "KubernetesProvider",
    "LatestStat",
    "Organization",
    "ProviderConfig",
    "Satellite",
    "SatelliteKey",
    "V1User",
    "Workspace",
]

ContainerStatus = Literal["CREATING", "OFF", "ON", "FAILED", "UNKNOWN"]
BuildEventType = Literal["start", "stage", "substage", "error", "done"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class CoderVersion(_Model):
    """The primary's version from the ``coder-version`` header of ``GET /api``."""

    raw: str
    major: int | None = None
    minor: int | None = None
    patch: int | None = None

    @classmethod
    def parse(cls, raw: str | None) -> CoderVersion:
        text = (raw or "").strip()
        if not text:
            return cls(raw="unknown")
        numbers = text.lstrip("v").split("+")[0].split("-")[0].split(".")
        parts: list[int | None] = []
        for item in numbers[:3]:
            parts.append(int(item) if item.isdigit() else None)
        parts += [None] * (3 - len(parts))
        return cls(raw=text, major=parts[0], minor=parts[1], patch=parts[2])

    def at_least(self, major: int, minor: int) -> bool:
        if self.major is None or self.minor is None:
            return False
        return (self.major, self.minor) >= (major, minor)

    def known_older_than(self, major: int, minor: int) -> bool:
        """A version that names itself and is older (an unknown one is not known older)."""
        return self.major is not None and self.minor is not None and not self.at_least(
            major, minor
        )


class V1User(_Model):
    id: str
    email: str
    username: str
    name: str = ""
    roles: list[str] = Field(default_factory=list)
    temporary_password: bool = False
    login_type: str = ""
    key_regenerated_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Organization(_Model):
    id: str
    name: str
    members: list[dict[str, Any]] = Field(default_factory=list)


class Satellite(_Model):
    id: str
    name: str
    fingerprint: str


class SatelliteKey(_Model):
    key: str
    fingerprint: str


class ProviderConfig(_Model):
    cluster_address: str = ""
    default_namespace: str = ""
    storage_class: str = ""
    cluster_domain_suffix: str = ""
    ssh_enabled: bool = False


class KubernetesProvider(_Model):
    id: str
    name: str
    status: str
    built_in: bool = False
    envproxy_access_url: str = ""
    devurl_host: str = ""
    org_whitelist: list[str] | None = None
    #: Only 1.21 primaries send it (absent in 1.20, dropped in 1.22).
    enable_net_v2: bool | None = None
    config: ProviderConfig = Field(default_factory=ProviderConfig)


class LatestStat(_Model):
    time: datetime | None = None
    last_online: datetime | None = None
    container_status: ContainerStatus = "UNKNOWN"
    stat_error: str = ""


class Workspace(_Model):
    id: str
    name: str
    organization_id: str = ""
    user_id: str = ""
    image_id: str = ""
    image_tag: str = ""
    updating: bool = False
    latest_stat: LatestStat = Field(default_factory=LatestStat)
    rebuild_messages: list[Any] | None = None
    last_built_at: datetime | None = None
    auto_off_threshold: int = 0
    resource_pool_id: str = ""


class BuildEvent(_Model):
    id: str = ""
    workspace_id: str = ""
    build_id: str = ""
    time: datetime | None = None
    type: BuildEventType
    msg: str = ""
