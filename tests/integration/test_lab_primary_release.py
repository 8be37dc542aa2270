"""The lab's primary follows its chart release: the Coder emulator answers as the version
of the primary release (``coder`` in namespace ``coder`` of ``lab-primary``, what
inventories/lab deploys) and an upgrade of that release restarts it in the new mode on the
same state, as the restart of the real primary's pod would.

Real parts: a private lab (own state, ports +3300, no region) started as ``lab up`` starts
it, the stand-in charts of coder/coder 1.20.0 and 1.21.0 installed and upgraded by the lab's
helm, the lab's pods supervisor reading the Deployment, and the emulator over HTTP.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coder_migrate.lab.paths import CacheLayout, StateLayout
from coder_migrate.lab.runtime import Lab
from coder_migrate.lab.settings import LabSettings
from coder_migrate.lab.tools import helm_binary
from coder_migrate.lab.world import lab_world
from tests.fixtures.lab import Helm, start_lab
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

CHARTS = Path(__file__).resolve().parents[2] / "coder_migrate" / "lab" / "charts"
# Offset 3300: clear of the shared lab, test_lab_lifecycle (1000-1200), test_lab_pods (2500)
# and the README v2 path (3000).
SETTINGS = LabSettings.create(regions=0, port_offset=3300)
WAIT_SECONDS = 30.0


class Primary:
    """The private lab's emulator, as a client and the lab's pods supervisor see it."""

    def __init__(self, state: StateLayout) -> None:
        self.state = state
        self.url = f"http://127.0.0.1:{SETTINGS.coderd_port}"
        self.admin = state.coder_token.read_text().strip()

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Session-Token": token or self.admin},
                         timeout=5)

    def version(self) -> str:
        return self.get("/api/v0/users/me").headers["coder-version"]

    def plays(self, version: str) -> bool:
        return self.version() == version

    def supervisor_record(self) -> dict[str, Any]:
        return dict(json.loads(self.state.pods_state.read_text())["primary"])


@pytest.fixture
def private_lab(tmp_path: Path) -> Iterator[tuple[Primary, Helm]]:
    state = StateLayout(tmp_path / "lab")
    try:
        start_lab(state, SETTINGS)
        yield Primary(state), Helm(binary=helm_binary(), kubeconfig=state.kubeconfig)
    finally:
        Lab(state, CacheLayout.default()).down()


def test_the_emulator_plays_the_version_of_the_primary_release(
    private_lab: tuple[Primary, Helm],
) -> None:
    primary, helm = private_lab
    world = lab_world().primary
    context = SETTINGS.clusters[0].context
    assert primary.plays("1.21.0")  # `lab up`'s --coder, before any release exists
    created = httpx.post(f"{primary.url}/emulator/users/platform-bot/tokens",
                         headers={"Session-Token": primary.admin}, timeout=5)
    user_token = created.json()["session_token"]
    workspaces = {w["id"] for w in primary.get("/api/v0/workspaces").json()}

    started = time.monotonic()
    helm.run(context, "install", world.release, str(CHARTS / "coder-v1.20"), "-n",
             world.namespace, "--create-namespace", "--set", "ingress.useDefault=false")
    wait_for(lambda: primary.plays("1.20.0"), "the emulator plays the 1.20.0 release", WAIT_SECONDS)
    followed_install = time.monotonic() - started
    # 1.20 behaviour: providers have no Networking v2 switch.
    pools = primary.get("/api/private/resource-pools").json()["kubernetes"]
    assert len(pools) == 3 and all("enable_net_v2" not in pool for pool in pools)
    assert primary.supervisor_record() == {
        "release": f"{context}/{world.namespace}/{world.release}", "version": "1.20.0",
        "error": "",
    }

    started = time.monotonic()
    helm.run(context, "upgrade", world.release, str(CHARTS / "coder-v1"), "-n",
             world.namespace, "--set", "coderd.serviceSpec.type=NodePort",
             # the namespace keeps 1.20's envproxy: 1.21.0 renders it with this image
             "--set", "envproxy.image=docker.io/coderenvs/envproxy:1.21.0")
    wait_for(lambda: primary.plays("1.21.0"), "the emulator plays the upgraded 1.21.0 release",
             WAIT_SECONDS)
    followed_upgrade = time.monotonic() - started
    pools = primary.get("/api/private/resource-pools").json()["kubernetes"]
    assert len(pools) == 3 and all(pool["enable_net_v2"] is False for pool in pools)
    # The same state: the user's session and the workspaces survived the restart.
    assert primary.get("/api/v0/users/me", user_token).json()["username"] == "platform-bot"
    assert {w["id"] for w in primary.get("/api/v0/workspaces").json()} == workspaces
    assert primary.get("/emulator/state").json()["mode"] == "v1.21"

    # A release the lab does not follow (another namespace) changes nothing.
    helm.run(context, "install", "other", str(CHARTS / "coder-v1.20"), "-n", "elsewhere",
             "--create-namespace", "--set", "ingress.useDefault=false")
    helm.run(context, "uninstall", world.release, "-n", world.namespace)
    watched_until = time.monotonic() + 3.0  # several supervisor ticks (0.75 s each)
    while time.monotonic() < watched_until:
        assert primary.plays("1.21.0")
        time.sleep(0.25)
    print(f"\nfollowed: install {followed_install:.1f} s, upgrade {followed_upgrade:.1f} s")
