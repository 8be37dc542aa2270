"""The lab's Coder v1 world, read from ``coder_migrate/lab/world.yml``: the same file
``inventories/lab`` holds (a symlink), so what the emulator seeds and what the inventory
names cannot drift (docs/lab.md "The lab's world").
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coder_migrate.errors import ConfigError

__all__ = ["WORLD_FILE", "LabWorld", "ProviderRelease", "RegionWorld", "lab_world"]

WORLD_FILE = Path(__file__).with_name("world.yml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderRelease(_Strict):
    """One entry of ``coder_workspace_providers``: a provider and its workspace-provider
    release in the region's cluster."""

    name: str
    namespace: str
    release: str


class TestWorkspace(_Strict):
    name: str
    owner: str


class RegionWorld(_Strict):
    providers: tuple[ProviderRelease, ...] = Field(alias="coder_workspace_providers")
    test_workspace: TestWorkspace = Field(alias="coder_test_workspace")


class PrimaryWorld(_Strict):
    namespace: str = Field(alias="coder_namespace")
    release: str = Field(alias="coder_release")


class LabWorld(_Strict):
    primary: PrimaryWorld
    regions: dict[str, RegionWorld]

    def owners(self) -> list[str]:
        """The users the world needs: every test workspace's owner, in region order."""
        return list(dict.fromkeys(r.test_workspace.owner for r in self.regions.values()))


def _hosts(data: Any, group: str) -> dict[str, Any]:
    hosts = data["all"]["children"][group]["hosts"]
    if not isinstance(hosts, dict):
        raise TypeError(group)
    return hosts


@functools.cache
def lab_world(path: Path = WORLD_FILE) -> LabWorld:
    """The world *path* describes; a bad file is one ``ConfigError`` line naming it."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        # The primary is the one host of coder_primary, whatever its name.
        (primary,) = _hosts(data, "coder_primary").values()
        regions = _hosts(data, "coder_regions")
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise ConfigError(
            f"{path}: expected one host in all.children.coder_primary.hosts and "
            f"all.children.coder_regions.hosts ({type(error).__name__}: {error})"
        ) from error
    try:
        return LabWorld.model_validate({"primary": primary, "regions": regions})
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{path}: {key}: {first['msg']}") from error
