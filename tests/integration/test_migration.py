"""The v1.20 -> v1.21 migration on the lab: a v1.20-style world migrated by `migrate apply`.

The world: a private Coder emulator in v1.21 mode as the primary (already upgraded), with one
workspace provider (Networking v2 off) and one test workspace per region; the old
coder/workspace-provider chart installed with helm in each region's provider namespace; no
satellites. Namespaces carry a tag unique to the test and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as kube_client

from coder_migrate.inventory import load_topology
from coder_migrate.lab.tools import chart_path
from coder_migrate.migrations.v1_20_to_v1_21.retain import RETAINED_CONFIG_MAP
from coder_migrate.providers.coder.health import health_url
from coder_migrate.providers.kube import KubeCluster
from tests.fixtures.coderd import CoderEmulator, EmulatorFactory
from tests.fixtures.lab import Helm, LabHandle
from tests.helpers import REPO, edit_yaml, lab_inventory
from tests.integration.test_deploy_two_doors import delete_tagged_records

pytestmark = pytest.mark.integration

REGIONS = ("us-east", "eu-west", "ap-southeast")
PROVIDER_RELEASE = "coder-workspace-provider"
OWNER = "platform-bot"  # the emulator's owner of the seeded test workspaces
CLI = [sys.executable, "-m", "coder_migrate"]
_TAGS = itertools.count()


def run_cli(*args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, "COLUMNS": "200"}, check=False,
    )


@dataclass
class MigrationWorld:
    inventory: Path
    emulator: CoderEmulator
    tag: str

    @property
    def provider_namespace(self) -> str:
        return f"coder-ws-{self.tag}"

    @property
    def satellite_namespace(self) -> str:
        return f"coder-sat-{self.tag}"

    @property
    def primary_namespace(self) -> str:
        return f"coder-{self.tag}"

    def get(self, path: str) -> Any:
        token = self.emulator.token_file.read_text().strip()
        response = httpx.get(f"{self.emulator.url}{path}", headers={"Session-Token": token},
                             timeout=10)
        response.raise_for_status()
        return response.json()

    def providers(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.get("/api/private/resource-pools")["kubernetes"]}

    def workspaces(self) -> dict[str, dict[str, Any]]:
        return {w["name"]: w for w in self.get("/api/v0/workspaces")}

    def satellites(self) -> list[str]:
        return sorted(s["name"] for s in self.get("/api/private/satellites")["data"])


def _tagged_namespaces(lab: LabHandle, tag: str) -> dict[str, list[str]]:
    found = {}
    for name, context in lab.contexts.items():
        with lab.api(context) as api:
            core = kube_client.CoreV1Api(api)
            found[name] = sorted(
                n.metadata.name for n in core.list_namespace().items if tag in n.metadata.name
            )
    return found


def _cleanup(lab: LabHandle, helm: Helm, world: MigrationWorld) -> None:
    for region in REGIONS:
        helm.run(f"lab-{region}", "uninstall", PROVIDER_RELEASE, "-n", world.provider_namespace,
                 "--ignore-not-found", check=False)
    for context in lab.contexts.values():
        with lab.api(context) as api:
            core = kube_client.CoreV1Api(api)
            for namespace in core.list_namespace().items:
                if world.tag in namespace.metadata.name:
                    core.delete_namespace(namespace.metadata.name)


def _install_old_provider(helm: Helm, world: MigrationWorld, region: str) -> None:
    helm.run(
        f"lab-{region}", "upgrade", "--install", PROVIDER_RELEASE,
        str(chart_path("workspace-provider")), "-n", world.provider_namespace,
        "--create-namespace", "--set", f"envproxy.accessURL=https://{region}.coder.lab.internal",
        "--set", "envproxy.clusterAddress=https://kubernetes.default.svc",
        "--set", f"cemanager.accessURL={world.emulator.url}",
        # Its own nginx ingress has a LoadBalancer Service the lab cannot give an address.
        "--set", "ingress.useDefault=false",
    )


@contextlib.contextmanager
def migration_world_at(
    lab: LabHandle, helm: Helm, coderd_factory: EmulatorFactory, tmp_path: Path, *,
    address_block: int = 14, prefix: str = "m", install_providers: bool = False,
) -> Iterator[MigrationWorld]:
    """The v1.20-style world on its own loopback *address_block* (test files that may run at
    the same time use different blocks), tagged with *prefix*; with *install_providers* the
    old workspace-provider release in each region. Cleaned up on exit, and only once its
    satellites stopped answering, since the next world takes the same addresses."""
    emulator = coderd_factory("v1.21", config={"build_step_seconds": 0.05})
    tag = f"{prefix}{os.getpid() % 1000}x{next(_TAGS)}"
    inventory = lab_inventory(tmp_path, tag=tag, address_block=address_block,
                              primary_url=emulator.url, token_file=emulator.token_file)
    world = MigrationWorld(inventory=inventory, emulator=emulator, tag=tag)
    # Read now: a test may break the inventory on purpose.
    health_urls = [health_url(r.access_url, "v1") for r in load_topology(inventory).regions]
    for region in REGIONS:
        def tagged(data: dict[str, Any]) -> None:
            data["coder_workspace_providers"][0]["namespace"] = world.provider_namespace
            data["coder_test_workspace"]["owner"] = OWNER

        edit_yaml(inventory / "host_vars" / f"{region}.yml", tagged)
    try:
        if install_providers:
            for region in REGIONS:
                _install_old_provider(helm, world, region)
        yield world
    finally:
        _cleanup(lab, helm, world)
        delete_tagged_records(lab, tag)
        _wait_until_satellites_stop(health_urls)


def _wait_until_satellites_stop(urls: list[str], timeout: float = 90.0) -> None:
    """The next world reuses the address block: a satellite of this one still answering there
    would hand out its key to the next one's registration."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answering = []
        for url in urls:
            try:
                httpx.get(url, timeout=2.0)
            except httpx.TransportError:
                continue
            answering.append(url)
        if not answering:
            return
        time.sleep(1.0)
    pytest.fail(f"satellites still answer {timeout:.0f} s after their namespaces were deleted: "
                f"{', '.join(answering)}")


@pytest.fixture
def migration_world(
    lab: LabHandle, helm: Helm, coderd_factory: EmulatorFactory, tmp_path: Path
) -> Iterator[MigrationWorld]:
    with migration_world_at(lab, helm, coderd_factory, tmp_path) as world:
        yield world


def _release_status(helm: Helm, region: str, namespace: str) -> str:
    listed = helm.run(f"lab-{region}", "list", "-n", namespace, "-a", "-o", "json")
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    return str(rows[PROVIDER_RELEASE]["status"]) if PROVIDER_RELEASE in rows else "absent"


def test_migration_end_to_end_keeps_the_old_releases_and_replans_empty(
    lab: LabHandle, helm: Helm, migration_world: MigrationWorld
) -> None:
    world = migration_world
    for region in REGIONS:
        _install_old_provider(helm, world, region)
    assert all(not p["enable_net_v2"] for p in world.providers().values())
    built_before = {n: w["last_built_at"] for n, w in world.workspaces().items()}

    plan = run_cli("migrate", "plan", "-i", str(world.inventory), "--output", "json",
                   "--detailed-exitcode")
    assert plan.returncode == 2, plan.stderr
    planned = json.loads(plan.stdout)
    assert planned["operation"] == "v1.20-to-v1.21"
    assert [w["name"] for w in planned["waves"]] == ["canary us-east", "regions", "dns"]
    kinds = [c["kind"] for c in planned["waves"][0]["changes"]]
    assert list(dict.fromkeys(kinds)) == [
        "Namespace", "HelmRelease", "SatelliteRegistration", "ProviderNetworkingV2",
        "WorkspaceRebuild", "DnsRRSet", "DnsCheck", "RetainRelease"]
    assert {c["region"] for c in planned["waves"][0]["changes"]} == {"us-east"}
    assert {c["kind"] for c in planned["waves"][2]["changes"]} == {"DnsRRSet", "DnsCheck"}

    # The spelling: `apply --migration`, the same as `migrate apply`.
    applied = run_cli("apply", "--migration", "v1.20-to-v1.21", "-i", str(world.inventory),
                      "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "reached app" in applied.stderr  # the workspace answered through its satellite
    token = world.emulator.token_file.read_text().strip()
    assert token not in applied.stdout + applied.stderr

    assert world.satellites() == sorted(REGIONS)
    providers = world.providers()
    assert {n: p["enable_net_v2"] for n, p in providers.items()} == dict.fromkeys(REGIONS, True)
    after = world.workspaces()
    for region in REGIONS:
        workspace = after[f"migration-check-{region}"]
        assert workspace["latest_stat"]["container_status"] == "ON"
        assert workspace["last_built_at"] != built_before[f"migration-check-{region}"]
        assert _release_status(helm, region, world.provider_namespace) == "deployed"
        with lab.api(f"lab-{region}") as api:  # the satellite is in its own namespace
            pods = kube_client.CoreV1Api(api).list_namespaced_pod(world.satellite_namespace)
            assert pods.items
    primary = KubeCluster("lab-primary", str(lab.kubeconfig))
    found = asyncio.run(primary.read_config_map(world.primary_namespace, RETAINED_CONFIG_MAP))
    assert found is not None
    retained = json.loads(found[0]["retained.json"])
    assert sorted(retained) == sorted(
        f"{r}/{world.provider_namespace}/{PROVIDER_RELEASE}" for r in REGIONS
    )

    again = run_cli("plan", "--migration", "v1.20-to-v1.21", "-i", str(world.inventory),
                    "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout
    rerun = run_cli("migrate", "apply", "-i", str(world.inventory), "--auto-approve")
    assert rerun.returncode == 0 and "No changes" in rerun.stdout, rerun.stderr


def test_bad_input_is_refused_before_any_change(
    lab: LabHandle, helm: Helm, migration_world: MigrationWorld
) -> None:
    world = migration_world
    for region in ("us-east", "eu-west"):  # ap-southeast has no old release
        _install_old_provider(helm, world, region)
    edit_yaml(world.inventory / "host_vars" / "us-east.yml",
              lambda d: d["coder_workspace_providers"][0].update(name="no-such-provider"))
    edit_yaml(world.inventory / "host_vars" / "eu-west.yml",
              lambda d: d["coder_test_workspace"].update(name="no-such-workspace"))
    before = _tagged_namespaces(lab, world.tag)

    for command in ("plan", "apply"):
        extra = ("--auto-approve",) if command == "apply" else ()
        result = run_cli("migrate", command, "-i", str(world.inventory), *extra)
        assert result.returncode != 0, result.stdout
        errors = result.stderr
        assert "preflight found 3 problem(s); nothing was changed" in errors
        assert "us-east: workspace provider 'no-such-provider' (coder_workspace_providers) " \
               "does not exist on the primary" in errors
        assert "eu-west: test workspace 'no-such-workspace' of 'platform-bot' " \
               "(coder_test_workspace) does not exist on the primary" in errors
        assert "ap-southeast: the old workspace-provider release coder-workspace-provider " \
               f"in ns {world.provider_namespace} of lab-ap-southeast is not installed" in errors
    assert _tagged_namespaces(lab, world.tag) == before
    assert world.satellites() == []
    assert not any(p["enable_net_v2"] for p in world.providers().values())

    # The satellite's namespace equal to the provider's: the inventory itself is refused.
    edit_yaml(world.inventory / "host_vars" / "eu-west.yml",
              lambda d: d["coder_workspace_providers"][0].update(
                  namespace=world.satellite_namespace))
    same = run_cli("migrate", "plan", "-i", str(world.inventory))
    assert same.returncode != 0
    assert "coder_workspace_providers[0].namespace" in same.stderr
    assert _tagged_namespaces(lab, world.tag) == before


def test_a_1_20_primary_is_told_to_upgrade_first(
    lab: LabHandle, coderd_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = coderd_factory("v1.20")
    tag = f"m{os.getpid() % 1000}x{next(_TAGS)}"
    inventory = lab_inventory(tmp_path, tag=tag, address_block=14, primary_url=emulator.url,
                              token_file=emulator.token_file)
    result = run_cli("migrate", "apply", "-i", str(inventory), "--auto-approve")
    assert result.returncode != 0
    assert "primary: the primary runs Coder 1.20" in result.stderr
    assert "upgrade the primary to 1.21 first" in result.stderr
    assert not any(_tagged_namespaces(lab, tag).values())


def test_a_failed_canary_rebuild_stops_the_wave_and_a_rerun_finishes(
    lab: LabHandle, helm: Helm, migration_world: MigrationWorld
) -> None:
    world = migration_world
    for region in REGIONS:
        _install_old_provider(helm, world, region)
    world.emulator.add_fault(kind="fail_build", workspace="migration-check-us-east", count=1)

    failed = run_cli("migrate", "apply", "-i", str(world.inventory), "--auto-approve")
    assert failed.returncode == 7, failed.stdout + failed.stderr
    assert "wave 'canary us-east' stopped: us-east: rebuilding test workspace " \
           "migration-check-us-east failed" in failed.stderr
    assert "run `migrate apply` again" in failed.stderr
    # the other regions were not touched; the old releases stay
    assert world.satellites() == ["us-east"]
    assert {n: p["enable_net_v2"] for n, p in world.providers().items()} == {
        "us-east": True, "eu-west": False, "ap-southeast": False}
    namespaces = _tagged_namespaces(lab, world.tag)
    assert namespaces["eu-west"] == namespaces["ap-southeast"] == [world.provider_namespace]
    assert all(_release_status(helm, r, world.provider_namespace) == "deployed"
               for r in REGIONS)

    world.emulator.clear_faults()
    replanned = run_cli("migrate", "plan", "-i", str(world.inventory), "--output", "json")
    assert replanned.returncode == 0, replanned.stderr
    canary = json.loads(replanned.stdout)["waves"][0]
    assert list(dict.fromkeys(c["kind"] for c in canary["changes"])) == [
        "WorkspaceRebuild", "DnsRRSet", "DnsCheck", "RetainRelease"]
    finished = run_cli("migrate", "apply", "-i", str(world.inventory), "--auto-approve")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert world.satellites() == sorted(REGIONS)
    again = run_cli("migrate", "plan", "-i", str(world.inventory), "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
