"""Settings and seed of the Coder emulator (``--config``, YAML or JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from coder_migrate.errors import ConfigError
from coder_migrate.lab.world import RegionWorld, lab_world

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
#: The owner of a test workspace of a region the lab's world does not name (region-4, ...).
TEST_WORKSPACE_OWNER = lab_world().owners()[0]


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
        """The default seed: admin, org default, and the lab's world (coder_migrate/lab/
        world.yml) for each region: its providers, its test workspace and that one's owner;
        a region the world does not name gets a provider and a test workspace of its name."""
        world = lab_world().regions
        names = {u.username for u in self.users}
        if "admin" not in names:
            self.users.insert(0, UserSeed(username="admin", email="admin@coder.lab.internal",
                                          name="Lab Admin", roles=["site-admin"]))
        owners = [world[r].test_workspace.owner if r in world else TEST_WORKSPACE_OWNER
                  for r in self.regions] or [TEST_WORKSPACE_OWNER]
        for owner in dict.fromkeys(owners):
            if owner not in names:
                self.users.append(UserSeed(username=owner))
        if not any(o.name == "default" for o in self.orgs):
            self.orgs.insert(0, OrgSeed(name="default", members=[u.username for u in self.users]))
        if self.providers is None:
            self.providers = [
                ProviderSeed(name=name, envproxy_access_url=f"https://{name}.coder.lab.internal",
                             devurl_host=f"*.{name}.coder.lab.internal")
                for region in self.regions
                for name in ([p.name for p in world[region].providers] if region in world
                             else [region])
            ]
        if self.workspaces is None:
            self.workspaces = [
                _test_workspace(region, world.get(region))
                for region in self.regions
            ]
            known = {p.name for p in self.providers}
            self.workspaces = [w for w in self.workspaces if w.provider in known]
        return self


def _test_workspace(region: str, world: RegionWorld | None) -> WorkspaceSeed:
    """A region's test workspace, on its first provider, as the lab's world names it."""
    if world is None:
        return WorkspaceSeed(name=f"migration-check-{region}", provider=region)
    return WorkspaceSeed(name=world.test_workspace.name, owner=world.test_workspace.owner,
                         provider=world.providers[0].name)


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
