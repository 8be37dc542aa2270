"""Settings and seed of the Coder emulator (``--config``, YAML or JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from coder_migrate.errors import ConfigError

__all__ = [
    "DEFAULT_REGIONS",
    "MODES",
    "AgentSeed",
    "AppSeed",
    "EmulatorConfig",
    "FaultRule",
    "Mode",
    "OrgSeed",
    "PortSeed",
    "ProviderSeed",
    "UserSeed",
    "WorkspaceSeed",
    "load_config",
]

Mode = Literal["v1.21", "v1.20", "v2", "v2-unlicensed"]
MODES: tuple[Mode, ...] = ("v1.21", "v1.20", "v2", "v2-unlicensed")
DEFAULT_REGIONS = ("us-east", "eu-west", "ap-southeast")
TEST_WORKSPACE_OWNER = "platform-bot"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserSeed(_Strict):
    username: str
    email: str = ""
    name: str = ""
    roles: list[str] = Field(default_factory=lambda: ["site-member"])
    password: str = ""


class OrgSeed(_Strict):
    name: str
    members: list[str] = Field(default_factory=list)


class ProviderSeed(_Strict):
    name: str
    envproxy_access_url: str = ""
    devurl_host: str = ""
    enable_net_v2: bool = False
    status: str = "ready"
    cluster_address: str = "https://kubernetes.default.svc"
    default_namespace: str = "coder-workspaces"


class AppSeed(_Strict):
    slug: str


class PortSeed(_Strict):
    port: int = Field(ge=1, le=65535)
    protocol: Literal["http", "tcp"] = "http"


class AgentSeed(_Strict):
    name: str = "main"
    apps: list[AppSeed] = Field(default_factory=lambda: [AppSeed(slug="code-server")])
    ports: list[PortSeed] = Field(
        default_factory=lambda: [PortSeed(port=8080), PortSeed(port=22, protocol="tcp")]
    )


class WorkspaceSeed(_Strict):
    name: str
    owner: str = TEST_WORKSPACE_OWNER
    org: str = "default"
    provider: str = ""
    image_tag: str = "latest"
    agents: list[AgentSeed] = Field(default_factory=lambda: [AgentSeed()])


FaultKind = Literal["latency", "status", "drop", "stuck_build", "fail_build"]


class FaultRule(_Strict):
    """One injected fault; see docs/coder-emulator.md "Fault injection"."""

    id: str = ""
    kind: FaultKind
    path: str = ""
    method: str = ""
    count: int | None = Field(default=None, ge=1)
    status: int = Field(default=503, ge=400, le=599)
    seconds: float = Field(default=0.5, ge=0, le=600)
    workspace: str = ""


class EmulatorConfig(_Strict):
    access_url: str = ""
    wildcard_hostname: str = "*.coder.lab.internal"
    regions: list[str] = Field(default_factory=lambda: list(DEFAULT_REGIONS))
    health_interval_seconds: float = Field(default=60.0, gt=0)
    build_step_seconds: float = Field(default=0.1, ge=0)
    users: list[UserSeed] = Field(default_factory=list)
    orgs: list[OrgSeed] = Field(default_factory=list)
    providers: list[ProviderSeed] | None = None
    workspaces: list[WorkspaceSeed] | None = None
    faults: list[FaultRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fill_defaults(self) -> EmulatorConfig:
        """The default seed: admin, platform-bot, org default, one provider per region."""
        names = {u.username for u in self.users}
        if "admin" not in names:
            self.users.insert(
                0,
                UserSeed(
                    username="admin",
                    email="admin@coder.lab.internal",
                    name="Lab Admin",
                    roles=["site-admin"],
                ),
            )
        if TEST_WORKSPACE_OWNER not in names:
            self.users.append(
                UserSeed(
                    username=TEST_WORKSPACE_OWNER,
                    email="platform-bot@coder.lab.internal",
                    name="Platform Bot",
                )
            )
        if not any(o.name == "default" for o in self.orgs):
            self.orgs.insert(0, OrgSeed(name="default", members=[u.username for u in self.users]))
        if self.providers is None:
            self.providers = [
                ProviderSeed(
                    name=region,
                    envproxy_access_url=f"https://{region}.coder.lab.internal",
                    devurl_host=f"*.{region}.coder.lab.internal",
                )
                for region in self.regions
            ]
        if self.workspaces is None:
            self.workspaces = [
                WorkspaceSeed(name=f"migration-check-{region}", provider=region)
                for region in self.regions
                if any(p.name == region for p in self.providers)
            ]
        return self


def load_config(path: Path | None) -> EmulatorConfig:
    """Read ``--config``; a bad file is a one-line ``ConfigError`` naming file and key."""
    if path is None:
        return EmulatorConfig()
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read emulator config ({error.strerror})") from error
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid YAML/JSON") from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return EmulatorConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {key}: {first['msg']}") from error
