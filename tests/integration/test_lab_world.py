"""``coder-migrate lab up --world v1.20``: one command gives the world before the migration,
the one ``inventories/lab`` describes (docs/lab.md "A v1.20 world").

Real parts: the command itself (the installed console script) on a private lab (own state,
ports +3400), the lab's helm releases read back from its clusters, the Coder emulator over
its v1 API, the inventory read by ``ansible-inventory``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as kube_client

from coder_migrate.inventory import load_topology
from coder_migrate.lab.paths import CacheLayout, StateLayout
from coder_migrate.lab.runtime import Lab
from coder_migrate.lab.settings import LabSettings
from coder_migrate.lab.tools import helm_binary
from tests.fixtures.lab import Helm, kube_api
from tests.helpers import REPO, PrivateLab, relocated_inventory, wait_for

pytestmark = pytest.mark.integration

# Offset 3400: clear of the shared lab and of the other private labs (1000-1200, 2500, 3000,
# 3300); its region pods would listen on 127.0.34.N.
LAB_OFFSET = 3400
SETTINGS = LabSettings.create(port_offset=LAB_OFFSET, world="v1.20")
CODER = f"http://127.0.0.1:{SETTINGS.coderd_port}"


@pytest.fixture
def private_lab(tmp_path: Path) -> Iterator[PrivateLab]:
    lab = PrivateLab(tmp_path / "lab", LAB_OFFSET, 34)
    try:
        yield lab
    finally:
        Lab(StateLayout(lab.state_dir), CacheLayout.default()).down()


def lab_up(lab: PrivateLab, *args: str) -> tuple[str, float]:
    started = time.monotonic()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "coder-migrate"), "lab", "up", *args],
        env={**os.environ, **lab.environment()}, capture_output=True, text=True, timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, time.monotonic() - started


def releases(helm: Helm, context: str) -> dict[str, dict[str, Any]]:
    listed = helm.run(context, "list", "-A", "-o", "json").stdout
    return {f"{r['namespace']}/{r['name']}": r for r in json.loads(listed)}


def envproxy_env(kubeconfig: Path, context: str, namespace: str) -> dict[str, str]:
    with kube_api(kubeconfig, context) as api:
        deployment = kube_client.AppsV1Api(api).read_namespaced_deployment("envproxy", namespace)
    container = deployment.spec.template.spec.containers[0]
    return {e.name: e.value for e in container.env if e.value is not None}


def reach_through_envproxies(state: StateLayout, admin: dict[str, str], topology: Any,
                             pool_by_name: dict[str, dict[str, Any]]) -> None:
    """Each region's test workspace app answers through its provider's envproxy, for the
    owner's session only; the lab plays one envproxy per region."""
    session = httpx.post(f"{CODER}/emulator/users/platform-bot/tokens", headers=admin,
                         timeout=5).json()["session_token"]
    for region in topology.regions:
        assert region.test_workspace is not None
        pool = pool_by_name[region.workspace_providers[0].name]
        name, owner = region.test_workspace.name, region.test_workspace.owner
        host = f"code-server--main--{name}--{owner}" + pool["devurl_host"].removeprefix("*")
        url = f"{pool['envproxy_access_url']}/hello?from={region.name}"
        response = wait_for(
            lambda url=url, host=host: httpx.get(
                url, headers={"Host": host, "Session-Token": session}, timeout=5
            ).raise_for_status(),
            f"{name}'s app through {region.name}'s envproxy", 30.0,
        )
        echoed = response.json()
        assert (echoed["path"], echoed["query"]) == ("/hello", f"from={region.name}")
        assert session not in str(echoed["headers"])
        anonymous = httpx.get(url, headers={"Host": host}, timeout=5)
        assert anonymous.status_code == 303  # to the primary's login
    pods = json.loads(state.pods_state.read_text())["pods"]
    assert sorted((p["cluster"], p["mode"]) for p in pods) == sorted(
        (r.name, "envproxy") for r in topology.regions
    )
    # An envproxy knows the workspaces of its own provider only.
    first, second = topology.regions[0], topology.regions[1]
    assert second.test_workspace is not None
    pool = pool_by_name[first.workspace_providers[0].name]
    host = (f"code-server--main--{second.test_workspace.name}--{second.test_workspace.owner}"
            + pool["devurl_host"].removeprefix("*"))
    other = httpx.get(f"{pool['envproxy_access_url']}/hello",
                      headers={"Host": host, "Session-Token": session}, timeout=5)
    assert other.status_code == 404


def plan_primary_upgrade_first(lab: PrivateLab, tmp_path: Path) -> None:
    inventory = relocated_inventory(REPO / "inventories" / "lab", tmp_path / "lab-inv", lab)
    command = [str(Path(sys.executable).parent / "coder-migrate"), "plan", "-i", str(inventory)]
    env = {**os.environ, **lab.environment(), "COLUMNS": "200"}
    primary_only = subprocess.run([*command, "--limit", "primary"], env=env,
                                  capture_output=True, text=True, timeout=300, check=False)
    assert primary_only.returncode == 0, primary_only.stderr
    assert "chart coder-1.20.0 -> coder-1.21.0" in primary_only.stdout
    assert "satellite registration" not in primary_only.stdout
    everything = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                                check=False)
    assert everything.returncode != 0
    assert "a satellite needs Coder 1.21 or newer on the primary, which runs 1.20.0: upgrade " \
           "the primary to 1.21 first" in everything.stderr


def test_lab_up_world_v1_20_is_the_world_inventories_lab_describes(
    private_lab: PrivateLab, tmp_path: Path,
) -> None:
    output, seconds = lab_up(private_lab, "--world", "v1.20")
    print(f"\nlab up --world v1.20: {seconds:.1f} s")
    state = StateLayout(private_lab.state_dir)
    admin = {"Session-Token": state.coder_token.read_text().strip()}
    helm = Helm(binary=helm_binary(), kubeconfig=state.kubeconfig)
    topology = load_topology(REPO / "inventories" / "lab")

    # The primary: its coder/coder 1.20.0 release, and the emulator answering as 1.20.0.
    primary = releases(helm, "lab-primary")
    key = f"{topology.primary.namespace}/{topology.primary.release}"
    assert (primary[key]["chart"], primary[key]["status"]) == ("coder-1.20.0", "deployed")
    me = httpx.get(f"{CODER}/api/v0/users/me", headers=admin, timeout=5)
    assert me.headers["coder-version"] == "1.20.0"

    pools = httpx.get(f"{CODER}/api/private/resource-pools", headers=admin,
                      timeout=5).json()["kubernetes"]
    pool_by_name = {p["name"]: p for p in pools}
    # 1.20 has no Networking v2 switch at all (V1 §4): the providers use envproxy.
    assert all("enable_net_v2" not in pool for pool in pools)
    users = {u["username"]: u["id"] for u in
             httpx.get(f"{CODER}/api/v0/users", headers=admin, timeout=5).json()}
    workspaces = httpx.get(f"{CODER}/api/v0/workspaces", headers=admin, timeout=5).json()

    for region in topology.regions:
        context = region.kube_context
        installed = releases(helm, context)
        for provider in region.workspace_providers:
            # A coder/workspace-provider release per provider, with what `coder providers
            # create` gives the operator for it.
            release = installed[f"{provider.namespace}/{provider.release}"]
            assert (release["chart"], release["status"]) == ("workspace-provider-1.0.0",
                                                             "deployed")
            env = envproxy_env(state.kubeconfig, context, provider.namespace)
            pool = pool_by_name[provider.name]
            assert env["ENVPROXY_ACCESS_URL"] == pool["envproxy_access_url"]
            assert env["CLUSTER_ADDRESS"] == pool["config"]["cluster_address"]
            assert env["CEMANAGER_ACCESS_URL"] == CODER
            assert len(env["CEMANAGER_TOKEN"]) >= 32
            assert env["CEMANAGER_TOKEN"] not in output
        # The region's test workspace as the inventory names it, on its provider.
        test_workspace = region.test_workspace
        assert test_workspace is not None
        found = [w for w in workspaces if w["name"] == test_workspace.name]
        assert len(found) == 1, test_workspace.name
        assert found[0]["user_id"] == users[test_workspace.owner]
        provider_ids = {pool_by_name[p.name]["id"] for p in region.workspace_providers}
        assert found[0]["resource_pool_id"] in provider_ids

    # Workspaces are reachable as before the migration: through their provider's envproxy,
    # which the lab plays from the release's Deployment.
    reach_through_envproxies(state, admin, topology, pool_by_name)

    # The first step of the migration can be planned: the primary's upgrade on its own; a
    # plan with the regions names that step first (Coder 1.20 has no satellites).
    plan_primary_upgrade_first(private_lab, tmp_path)

    # Again: the running world is reused, nothing is installed a second time.
    again, _ = lab_up(private_lab, "--world", "v1.20")
    assert again.startswith("reused the running lab")
    assert releases(helm, "lab-primary")[key]["revision"] == primary[key]["revision"]


def test_lab_up_refuses_a_world_and_a_coder_that_contradict_it(
    private_lab: PrivateLab,
) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "coder-migrate"), "lab", "up", "--world", "v1.20",
         "--coder", "v2"],
        env={**os.environ, **private_lab.environment()}, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert result.returncode != 0
    assert "--world v1.20 starts the primary as Coder 1.20; --coder v2 contradicts it" in (
        result.stderr
    )
    assert not (private_lab.state_dir / "lab.json").exists()


