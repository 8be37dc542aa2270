"""The migration on the world ``lab up --world v1.20`` gives, with the shipped
``inventories/lab`` (relocated to a private lab): the primary upgraded on its own, then
``apply --migration`` and ``rollback --migration``, each checked where users see it.

Real parts: the commands themselves on a private lab (own state, ports +3500, region
addresses 127.0.35.N), the emulator following the primary's release, the lab playing the
satellites and envproxies the releases deploy, workspace apps answering through them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coder_migrate.inventory import load_topology
from coder_migrate.lab.paths import CacheLayout, StateLayout
from coder_migrate.lab.runtime import Lab
from coder_migrate.lab.settings import LabSettings
from tests.helpers import REPO, PrivateLab, relocated_inventory, wait_for

pytestmark = pytest.mark.integration

# Offset 3500 and block 35: clear of the shared lab and of every other private lab.
LAB_OFFSET = 3500
SETTINGS = LabSettings.create(port_offset=LAB_OFFSET, world="v1.20")
CODER = f"http://127.0.0.1:{SETTINGS.coderd_port}"


class User:
    """A user of the private lab: its commands, and requests as platform-bot."""

    def __init__(self, lab: PrivateLab, inventory: Path) -> None:
        self.lab = lab
        self.inventory = inventory
        self.state = StateLayout(lab.state_dir)

    def run(self, *args: str) -> str:
        command = [str(Path(sys.executable).parent / "coder-migrate"), *args]
        env = {**os.environ, **self.lab.environment(), "COLUMNS": "200"}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900,
                                check=False)
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    @property
    def admin(self) -> dict[str, str]:
        return {"Session-Token": self.state.coder_token.read_text().strip()}

    def version(self) -> str:
        response = httpx.get(f"{CODER}/api/v0/users/me", headers=self.admin, timeout=5)
        return response.headers["coder-version"]

    def pools(self) -> dict[str, dict[str, Any]]:
        listed = httpx.get(f"{CODER}/api/private/resource-pools", headers=self.admin, timeout=5)
        return {p["name"]: p for p in listed.json()["kubernetes"]}

    def app(self, base_url: str, wildcard: str, workspace: str, owner: str,
            session: str) -> httpx.Response:
        host = f"code-server--main--{workspace}--{owner}" + wildcard.removeprefix("*")
        return httpx.get(f"{base_url}/hello", headers={"Host": host, "Session-Token": session},
                         timeout=5)


@pytest.fixture
def user(tmp_path: Path) -> Iterator[User]:
    lab = PrivateLab(tmp_path / "lab", LAB_OFFSET, 35)
    inventory = relocated_inventory(REPO / "inventories" / "lab", tmp_path / "inventory", lab)
    try:
        yield User(lab, inventory)
    finally:
        Lab(StateLayout(lab.state_dir), CacheLayout.default()).down()


def test_the_migration_on_the_v1_20_world_and_its_rollback(user: User) -> None:
    inventory = str(user.inventory)
    times: dict[str, float] = {}

    def timed(name: str, *args: str) -> str:
        started = time.monotonic()
        output = user.run(*args)
        times[name] = time.monotonic() - started
        return output

    timed("lab up --world v1.20", "lab", "up", "--world", "v1.20")
    assert user.version() == "1.20.0"
    session = httpx.post(f"{CODER}/emulator/users/platform-bot/tokens", headers=user.admin,
                         timeout=5).json()["session_token"]
    topology = load_topology(user.inventory)

    # 1. The primary alone, to 1.21.0: the emulator follows its release.
    timed("apply --limit primary", "apply", "-i", inventory, "--limit", "primary",
          "--no-dns", "--auto-approve")
    wait_for(lambda: user.version() == "1.21.0", "the primary answering as 1.21.0")
    assert all(p["enable_net_v2"] is False for p in user.pools().values())

    # 2. The migration: satellites, Networking v2 on, workspaces through the satellites.
    timed("apply --migration", "apply", "--migration", "v1.20-to-v1.21", "-i", inventory,
          "--auto-approve")
    pools = user.pools()
    for region in topology.regions:
        assert all(pools[p.name]["enable_net_v2"] is True for p in region.workspace_providers)
        assert region.test_workspace is not None and region.wildcard_host is not None
        through_satellite = user.app(region.access_url.rstrip("/"), region.wildcard_host,
                                     region.test_workspace.name, region.test_workspace.owner,
                                     session)
        assert through_satellite.status_code == 200, (region.name, through_satellite.text)
        assert through_satellite.json()["path"] == "/hello"

    # 3. The rollback: Networking v2 off, the envproxy path serves the workspaces again.
    timed("rollback --migration", "rollback", "--migration", "v1.20-to-v1.21", "-i",
          inventory, "--auto-approve")
    pools = user.pools()
    for region in topology.regions:
        assert region.test_workspace is not None
        pool = pools[region.workspace_providers[0].name]
        assert pool["enable_net_v2"] is False
        through_envproxy = user.app(pool["envproxy_access_url"], pool["devurl_host"],
                                    region.test_workspace.name, region.test_workspace.owner,
                                    session)
        assert through_envproxy.status_code == 200, (region.name, through_envproxy.text)
    print("\n" + ", ".join(f"{name}: {seconds:.1f} s" for name, seconds in times.items()))
