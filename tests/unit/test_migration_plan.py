"""The v1.20 -> v1.21 migration planner and preflight as pure functions; no cluster needed.

Topologies are copies of inventories/example (five regions, us-east the canary, one
workspace provider per region); worlds are built the way ``Engine.observe`` reports them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coder_migrate.engine.change import ApplyContext
from coder_migrate.engine.deploy import KIND_RELEASE, KIND_SATELLITE, deploy_waves
from coder_migrate.engine.kinds.release import protected_releases
from coder_migrate.engine.plan import Action, Change, Wave
from coder_migrate.engine.world import ManagedSite, World
from coder_migrate.errors import ApplyError, InventoryError, PlanError
from coder_migrate.inventory import Topology, load_topology
from coder_migrate.kinds import KINDS
from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION
from coder_migrate.migrations.v1_20_to_v1_21.networking_v2 import ProviderNetworkingV2Change
from coder_migrate.migrations.v1_20_to_v1_21.observe import (
    MigrationState,
    ProviderState,
    WorkspaceState,
)
from coder_migrate.migrations.v1_20_to_v1_21.plan import migration_waves
from coder_migrate.migrations.v1_20_to_v1_21.preflight import preflight_problems, raise_preflight
from coder_migrate.migrations.v1_20_to_v1_21.rebuild import WorkspaceRebuildChange
from coder_migrate.migrations.v1_20_to_v1_21.retain import RETAINED_CONFIG_MAP, RetainReleaseChange
from coder_migrate.providers.helm import ReleaseState
from tests.helpers import REPO, copy_inventory, edit_yaml
from tests.unit.test_engine_deploy import deployed_world, empty_world

KIND_NETWORKING_V2 = ProviderNetworkingV2Change.KIND
KIND_REBUILD = WorkspaceRebuildChange.KIND
KIND_RETAIN = RetainReleaseChange.KIND
REGIONS = ["us-east", "us-west", "eu-west", "ap-southeast", "australia-southeast1"]


@pytest.fixture(scope="module")
def v1(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return load_topology(copy_inventory(tmp_path_factory.mktemp("v1")))


def providers(
    topology: Topology, *, net_v2: bool = False, retained: bool = False, found: bool = True,
    status: str = "ready", release_status: str = "deployed",
) -> dict[str, list[ProviderState]]:
    return {
        r.name: [
            ProviderState(
                region=r.name, name=p.name, found=found, provider_id=f"id-{p.name}" if found
                else "", status=status if found else "", networking_v2=net_v2,
                release_status=release_status, retained=retained,
            )
            for p in r.workspace_providers
        ]
        for r in topology.regions
    }


def workspaces(topology: Topology, *, rebuilt: bool = False) -> dict[str, WorkspaceState]:
    return {
        r.name: WorkspaceState(
            region=r.name, name=r.test_workspace.name, owner=r.test_workspace.owner, found=True,
            workspace_id=f"ws-{r.name}", rebuilt=rebuilt,
        )
        for r in topology.regions if r.test_workspace is not None
    }


def changes_of(waves: list[Wave]) -> list[Change]:
    return [c for w in waves for c in w.changes]


def kinds(changes: list[Change], region: str) -> list[str]:
    return [c.kind for c in changes if c.region == region]


# -- the plan -------------------------------------------------------------------------------


def test_first_migration_runs_the_seven_steps_per_region_canary_first(v1: Topology) -> None:
    waves, notes = migration_waves(v1, empty_world(v1), providers(v1), workspaces(v1))

    assert [w.name for w in waves] == ["canary us-east", "regions"]
    assert waves[0].regions == ("us-east",)
    changes = changes_of(waves)
    assert all(c.region != "primary" for c in changes), "the migration never changes the primary"
    assert any("does not change the primary" in n for n in notes)
    for region in REGIONS:
        assert kinds(changes, region) == [
            "Namespace", KIND_RELEASE, KIND_SATELLITE, KIND_NETWORKING_V2, KIND_REBUILD,
            KIND_RETAIN,
        ], region
    by_id = {c.id: c for c in changes}
    switch = by_id["eu-west/ProviderNetworkingV2/eu-west"]
    assert switch.action is Action.UPDATE
    assert switch.snapshot() == {"provider": "eu-west", "networking_v2": False}
    assert switch.written() == {"provider": "eu-west", "networking_v2": True}
    assert switch.depends_on == ("eu-west/SatelliteRegistration/eu-west",)
    rebuild = by_id["eu-west/WorkspaceRebuild/migration-check-eu-west"]
    assert rebuild.action is Action.ACT and rebuild.depends_on == (switch.id,)
    retain = by_id["eu-west/RetainRelease/coder-workspace-provider.coder-workspaces"]
    assert retain.action is Action.ACT and retain.depends_on == (rebuild.id,)
    assert retain.written() == {"namespace": "coder-workspaces",
                            "release": "coder-workspace-provider", "retained": True}


def test_a_migrated_world_plans_nothing(v1: Topology) -> None:
    waves, _ = migration_waves(
        v1, deployed_world(v1), providers(v1, net_v2=True, retained=True),
        workspaces(v1, rebuilt=True),
    )
    assert waves == []


def test_rebuild_is_planned_when_providers_switch_even_if_rebuilt_before(v1: Topology) -> None:
    """After a rollback switched Networking v2 off, the next migration rebuilds again."""
    waves, _ = migration_waves(
        v1, deployed_world(v1), providers(v1, net_v2=False, retained=True),
        workspaces(v1, rebuilt=True),
    )
    changes = changes_of(waves)
    for region in REGIONS:
        assert kinds(changes, region) == [KIND_NETWORKING_V2, KIND_REBUILD]
    rebuild = next(c for c in changes if c.kind == KIND_REBUILD)
    assert "switch to Networking v2 in this plan" in rebuild.reason
    # the satellite is registered already: nothing to wait for in this plan
    assert next(c for c in changes if c.kind == KIND_NETWORKING_V2).depends_on == ()


def test_a_failed_or_missing_rebuild_is_planned_again_alone(v1: Topology) -> None:
    waves, _ = migration_waves(
        v1, deployed_world(v1), providers(v1, net_v2=True, retained=True),
        workspaces(v1, rebuilt=False),
    )
    changes = changes_of(waves)
    assert [c.kind for c in changes] == [KIND_REBUILD] * len(REGIONS)
    assert "not yet rebuilt" in changes[0].reason


def test_retain_is_planned_until_recorded(v1: Topology) -> None:
    waves, _ = migration_waves(
        v1, deployed_world(v1), providers(v1, net_v2=True, retained=False),
        workspaces(v1, rebuilt=True),
    )
    assert [c.kind for c in changes_of(waves)] == [KIND_RETAIN] * len(REGIONS)


def test_limit_plans_only_the_named_regions(v1: Topology) -> None:
    waves, _ = migration_waves(v1, empty_world(v1), providers(v1), workspaces(v1),
                               limit=["eu-west"])
    assert [w.name for w in waves] == ["regions"]
    assert {c.region for c in changes_of(waves)} == {"eu-west"}


def test_unknown_limit_is_refused(v1: Topology) -> None:
    with pytest.raises(PlanError, match="--limit names mars"):
        migration_waves(v1, empty_world(v1), providers(v1), workspaces(v1), limit=["mars"])


# -- never uninstall the old workspace-provider release ---------------------------------------


def _worlds(topology: Topology) -> Iterator[World]:
    """Worlds a migration or deploy can meet, including a region removed from the inventory
    whose record names a workspace-provider namespace and release (the worst case)."""
    yield empty_world(topology)
    deployed = deployed_world(topology)
    yield deployed
    region = topology.regions[1]
    provider = region.workspace_providers[0]
    gone = ManagedSite(name="old-region", generation="v1", kube_context=region.kube_context,
                       namespace=provider.namespace, release=provider.release)
    yield World(sites=deployed.sites, records=deployed.records,
                managed={**deployed.managed, "old-region": gone})


def test_no_migration_change_deletes_anything_and_never_an_old_release(v1: Topology) -> None:
    protected = protected_releases(v1)
    assert len(protected) == len(REGIONS)
    for world in _worlds(v1):
        for net_v2 in (False, True):
            for retained in (False, True):
                try:
                    waves, _ = migration_waves(
                        v1, world, providers(v1, net_v2=net_v2, retained=retained),
                        workspaces(v1),
                    )
                except PlanError as refused:  # the forged record: refused outright
                    assert "kept for rollback" in str(refused)
                    assert "old-region" in world.managed
                    continue
                changes = changes_of(waves)
                assert [c.id for c in changes if c.action is Action.DELETE] == []
                retains = [c for c in changes if c.kind == KIND_RETAIN]
                assert all(c.action is Action.ACT for c in retains)


def test_deploy_never_plans_deleting_an_old_release_in_a_regions_inventory(v1: Topology) -> None:
    """The deploy only removes releases it recorded as satellites; a workspace-provider
    release is never one of them. (A forged sites record naming one is the case the
    HelmRelease delete executor's guard must refuse; that guard lives in engine/apply.py.)"""
    protected = {(ns, rel) for _, ns, rel in protected_releases(v1)}
    worlds = list(_worlds(v1))
    for world in worlds[:2]:
        waves, _ = deploy_waves(v1, world)
        deletes = [c for c in changes_of(waves)
                   if c.kind == KIND_RELEASE and c.action is Action.DELETE]
        assert not [c for c in deletes
                    if (c.snapshot() or {}).get("namespace", "") and
                    ((c.snapshot() or {})["namespace"], (c.snapshot() or {})["release"])
                    in protected]


_UNINSTALL = re.compile(r"\.uninstall\(")
ALLOWED_UNINSTALL = {
    # the adapter itself, and `recover`, which removes only a *pending-install* of a site's own
    # release (the satellite or the primary, called from the deploy's release executor)
    "coder_migrate/providers/helm.py",
    # the HelmRelease kind's delete (regions removed from the inventory, rollback)
    "coder_migrate/engine/kinds/release.py",
    # the ProvisionerRelease kind's delete (rollback of provisioners it installed; refuses a
    # release kept for rollback like the HelmRelease kind)
    "coder_migrate/engine/kinds/provisioner_release.py",
}


def test_uninstall_is_called_only_from_the_helm_adapter_and_the_release_executor() -> None:
    callers = set()
    for path in (REPO / "coder_migrate").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if _UNINSTALL.search(text):
            callers.add(path.relative_to(REPO).as_posix())
    assert callers <= ALLOWED_UNINSTALL, f"new uninstall callers: {callers - ALLOWED_UNINSTALL}"
    kind = REPO / "coder_migrate" / "engine" / "kinds" / "release.py"
    assert kind.read_text(encoding="utf-8").count(".uninstall(") == 1, "one delete path"


# -- preflight --------------------------------------------------------------------------------


def _state(topology: Topology, **overrides: Any) -> MigrationState:
    fields: dict[str, Any] = {
        "version": "1.21.0", "version_ok": True, "providers": providers(topology),
        "workspaces": workspaces(topology),
    }
    fields.update(overrides)
    return MigrationState(**fields)


def test_a_good_world_passes_preflight(v1: Topology) -> None:
    assert preflight_problems(v1, _state(v1)) == []


def test_preflight_lists_every_problem_of_every_region_at_once(v1: Topology) -> None:
    state = _state(v1, version="1.20.3", version_ok=False)
    state.providers["us-east"] = [ProviderState(region="us-east", name="us-east", found=False,
                                                release_status="deployed")]
    state.providers["eu-west"] = [ProviderState(region="eu-west", name="eu-west", found=True,
                                                status="pending", release_status="")]
    del state.workspaces["ap-southeast"]
    state.access_problems["us-west"] = ["deployments", "secrets"]

    problems = preflight_problems(v1, state)

    assert problems == [
        "primary: the primary runs Coder 1.20.3 (coder-version header): upgrade the primary to "
        "1.21 first",
        "us-east: workspace provider 'us-east' (coder_workspace_providers) does not exist on "
        "the primary; name one of Manage > Providers",
        "us-west: the operator may not create deployments, secrets in ns coder-satellite of "
        "prod-us-west (SelfSubjectAccessReview)",
        "eu-west: workspace provider 'eu-west' is pending, not ready",
        "eu-west: the old workspace-provider release coder-workspace-provider in ns "
        "coder-workspaces of prod-eu-west is not installed, not deployed",
        "ap-southeast: test workspace 'migration-check-ap-southeast' of 'platform-bot' "
        "(coder_test_workspace) does not exist on the primary",
    ]
    with pytest.raises(PlanError) as raised:
        raise_preflight(problems)
    lines = str(raised.value).splitlines()
    assert lines[0] == "preflight found 6 problem(s); nothing was changed:"
    assert lines[1:] == problems


def test_preflight_with_limit_checks_only_those_regions(v1: Topology) -> None:
    state = _state(v1, providers=providers(v1, found=False))
    problems = preflight_problems(v1, state, ["eu-west"])
    assert [p.split(":")[0] for p in problems] == ["eu-west"]


def test_an_unreachable_primary_is_one_clear_problem(v1: Topology) -> None:
    state = MigrationState(primary_problem="the primary at X does not answer: refused")
    assert preflight_problems(v1, state) == [
        "primary: the primary at X does not answer: refused"
    ]


def test_satellite_namespace_equal_to_the_providers_is_refused(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    edit_yaml(inventory / "host_vars" / "eu-west.yml",
              lambda d: d["coder_workspace_providers"][0].update(namespace="coder-satellite"))
    with pytest.raises(InventoryError, match="coder_workspace_providers"):
        load_topology(inventory)


def test_preflight_also_refuses_the_same_namespace(v1: Topology) -> None:
    """Defence in depth for a topology built without the inventory rules."""
    region = v1.region("eu-west")
    same = region.model_copy(update={"workspace_providers": (
        region.workspace_providers[0].model_copy(update={"namespace": region.namespace}),
    )})
    topology = v1.model_copy(update={"regions": tuple(
        same if r.name == "eu-west" else r for r in v1.regions
    )})
    problems = preflight_problems(topology, _state(topology), ["eu-west"])
    assert problems == [
        "eu-west: coder_workspace_providers eu-west: namespace coder-satellite is the "
        "satellite's own (coder_namespace); the satellite needs a namespace of its own"
    ]


def test_preflight_refuses_a_v2_inventory(v1: Topology) -> None:
    v2 = v1.model_copy(update={"generation": "v2"})
    problems = preflight_problems(v2, _state(v1))
    assert len(problems) == 1 and "is for coder_generation v1" in problems[0]


# -- the retain executor (fakes for speed; the integration test runs it for real) -------------


class _FakeHelm:
    def __init__(self, status: str | None) -> None:
        self.status = status
        self.calls: list[str] = []

    async def release(self, namespace: str, name: str) -> ReleaseState | None:
        self.calls.append(f"release {namespace}/{name}")
        if self.status is None:
            return None
        return ReleaseState(name=name, namespace=namespace, chart="workspace-provider-1.20.0",
                            status=self.status, revision=3)

    async def uninstall(self, namespace: str, name: str) -> bool:  # pragma: no cover
        raise AssertionError("the migration must never uninstall")


class _FakeKube:
    context = "fake"

    def __init__(self) -> None:
        self.maps: dict[str, tuple[dict[str, str], str]] = {}

    async def read_config_map(self, namespace: str, name: str) -> Any:
        return self.maps.get(name)

    async def write_config_map(self, namespace: str, name: str, data: dict[str, str],
                               version: str | None) -> bool:
        current = self.maps.get(name)
        if (current[1] if current else None) != version:
            return False
        self.maps[name] = (dict(data), str(int(version or 0) + 1))
        return True


class _FakeEngine:
    def __init__(self, topology: Topology, status: str | None) -> None:
        self.topology = topology
        self.helm = _FakeHelm(status)
        self.primary_kube = _FakeKube()
        self.state_namespace = "coder"

    def site_helm(self, site: object) -> _FakeHelm:
        return self.helm


def _context(engine: _FakeEngine) -> ApplyContext:
    return ApplyContext(engine=engine, run="test", gate_timeout=1.0)  # type: ignore[arg-type]


def _retain_change(topology: Topology) -> Change:
    waves, _ = migration_waves(topology, deployed_world(topology),
                               providers(topology, net_v2=True), workspaces(topology,
                                                                           rebuilt=True))
    return next(c for c in changes_of(waves) if c.region == "eu-west")


def test_retain_records_a_deployed_release_once(v1: Topology) -> None:
    engine = _FakeEngine(v1, "deployed")
    change = _retain_change(v1)
    first = asyncio.run(change.act(_context(engine)))
    second = asyncio.run(change.act(_context(engine)))
    assert first.endswith("deployed (revision 3), retained")
    assert second.endswith("already retained")
    record = json.loads(engine.primary_kube.maps[RETAINED_CONFIG_MAP][0][
        "retained.json"])
    assert list(record) == ["eu-west/coder-workspaces/coder-workspace-provider"]
    assert record["eu-west/coder-workspaces/coder-workspace-provider"]["revision"] == 3


@pytest.mark.parametrize("status", [None, "failed", "uninstalling"])
def test_retain_stops_when_the_old_release_is_not_deployed(v1: Topology,
                                                           status: str | None) -> None:
    engine = _FakeEngine(v1, status)
    with pytest.raises(ApplyError, match="must stay deployed for rollback"):
        asyncio.run(_retain_change(v1).act(_context(engine)))
    assert engine.primary_kube.maps == {}


# -- registration and the CLI ------------------------------------------------------------------


def test_the_registry_knows_each_kind_the_migration_plans() -> None:
    assert KINDS.of(KIND_NETWORKING_V2) is ProviderNetworkingV2Change
    assert KINDS.of(KIND_REBUILD) is WorkspaceRebuildChange
    assert KINDS.of(KIND_RETAIN) is RetainReleaseChange


def test_migrate_plan_cli_prints_json_and_detailed_exit_code(
    v1: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import coder_migrate.cli.migrate as cli_migrate
    from coder_migrate.engine.plan import Plan

    waves, notes = migration_waves(v1, deployed_world(v1), providers(v1, net_v2=True),
                                   workspaces(v1, rebuilt=True))
    seen: list[tuple[str, ...]] = []

    async def fake_plan(engine: object, scope: Any) -> Plan:
        seen.append(scope.limit)
        return Plan.build(inventory=v1.source, waves=waves, notes=notes,
                          operation=MIGRATION, limit=scope.limit)

    monkeypatch.setattr(cli_migrate, "compute_migration_plan", fake_plan)
    monkeypatch.setattr(cli_migrate, "load_topology", lambda _: v1)
    runner = CliRunner()
    result = runner.invoke(cli_migrate.migrate, [
        "plan", "-i", v1.source, "--output", "json", "--detailed-exitcode", "--limit", "eu-west",
    ])
    assert result.exit_code == 2, result.output
    assert json.loads(result.output)["operation"] == "v1.20-to-v1.21"
    assert seen == [("eu-west",)]
    text = runner.invoke(cli_migrate.migrate, ["plan", "-i", v1.source])
    assert text.exit_code == 0, text.output
    assert "RetainRelease" not in text.output  # targets are for people, kinds are for JSON
    assert "helm release coder-workspace-provider in ns coder-workspaces" in text.output
