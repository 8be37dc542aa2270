"""The deploy planner as a pure function of (inventory, observed world): no cluster needed.

Topologies come from copies of inventories/example (a remote chart, TLS secrets, five
regions with us-east as the canary); worlds are built by hand the way ``Engine.observe``
reports them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import coder_migrate.cli.deploy as cli_deploy
import coder_migrate.engine.apply as apply_module
import coder_migrate.engine.run as run
from coder_migrate.cli import main
from coder_migrate.engine.apply import ApplyReport
from coder_migrate.engine.deploy import (
    KIND_NAMESPACE,
    KIND_PROXY,
    KIND_PROXY_TOKEN,
    KIND_RELEASE,
    KIND_SATELLITE,
    deploy_waves,
    mask_sensitive,
    plan_deploy,
)
from coder_migrate.engine.kinds.proxy import ProxyDoc
from coder_migrate.engine.plan import SENSITIVE, Action, Change, Wave
from coder_migrate.engine.values import deep_merge, release_values
from coder_migrate.engine.world import ManagedSite, PrimaryRecords, SiteState, World
from coder_migrate.errors import PlanError
from coder_migrate.inventory import Primary, Region, Topology, load_topology
from coder_migrate.providers.coder import (
    ProxyStatus,
    Satellite,
    SatelliteKey,
    WorkspaceProxy,
)
from coder_migrate.providers.helm import ReleaseState
from tests.helpers import copy_inventory, edit_yaml

DEPLOYED_CHART = "coder-1.21.0"
"""``helm list``'s chart column for the example inventory's ``coder`` 1.21.0."""
FINGERPRINT = "ab" * 32
REGION_ORDER = ["us-west", "eu-west", "ap-southeast", "australia-southeast1"]
"""The example's regions after the canary, in inventory order."""


# -- inventories ---------------------------------------------------------------------------


def _inventory(
    tmp: Path, *, generation: str = "v1", edit: Callable[[Path], None] | None = None
) -> Topology:
    inventory = copy_inventory(tmp)
    if generation == "v2":
        edit_yaml(inventory / "group_vars" / "all" / "coder.yml",
                  lambda d: d.update(coder_generation="v2", coder_version="2.10.0"))
        for host in (inventory / "host_vars").glob("*.yml"):
            edit_yaml(host, lambda d: d.pop("coder_workspace_providers", None))
    if edit is not None:
        edit(inventory)
    return load_topology(inventory)


@pytest.fixture(scope="module")
def v1(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return _inventory(tmp_path_factory.mktemp("v1"))


@pytest.fixture(scope="module")
def v2(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return _inventory(tmp_path_factory.mktemp("v2"), generation="v2")


def _with_primary_values(tmp: Path, values: dict[str, Any]) -> Topology:
    """The example with *values* merged into the primary's ``coder_values``."""
    def merge(data: dict[str, Any]) -> None:
        data["coder_values"] = deep_merge(data.get("coder_values") or {}, values)

    return _inventory(tmp, edit=lambda inv: edit_yaml(inv / "host_vars" / "primary.yml", merge))


# -- worlds --------------------------------------------------------------------------------


def _sites(topology: Topology) -> list[Primary | Region]:
    return [topology.primary, *topology.regions]


def empty_world(topology: Topology) -> World:
    return World(
        sites={s.name: SiteState(name=s.name, namespace_exists=False, release=None)
               for s in _sites(topology)},
        records=PrimaryRecords(reachable=True, version="1.21.0"),
        managed={},
    )


def _release(topology: Topology, site: Primary | Region, **changes: Any) -> ReleaseState:
    fields: dict[str, Any] = {
        "name": site.release, "namespace": site.namespace, "chart": DEPLOYED_CHART,
        "status": "deployed", "revision": 1, "values": release_values(topology, site),
    }
    fields.update(changes)
    return ReleaseState(**fields)


def deployed_world(topology: Topology) -> World:
    """Everything of *topology* in place, as a previous apply leaves it."""
    v2 = topology.generation == "v2"
    sites = {
        s.name: SiteState(
            name=s.name, namespace_exists=True, release=_release(topology, s),
            token_secret=v2 and isinstance(s, Region), pods_ready=1, pods_total=1,
            satellite_key=(
                SatelliteKey(key="PUBLIC KEY", fingerprint=FINGERPRINT)
                if not v2 and isinstance(s, Region) else None
            ),
        )
        for s in _sites(topology)
    }
    if v2:
        records = PrimaryRecords(reachable=True, version="2.10.0", proxies={
            r.name: _proxy(r.name, r.display_name, r.icon) for r in topology.regions
        })
    else:
        records = PrimaryRecords(reachable=True, version="1.21.0", satellites={
            r.name: Satellite(id=f"id-{r.name}", name=r.name, fingerprint=FINGERPRINT)
            for r in topology.regions
        })
    managed = {r.name: ManagedSite.of(topology, r) for r in topology.regions}
    return World(sites=sites, records=records, managed=managed)


def _proxy(name: str, display_name: str, icon: str = "") -> WorkspaceProxy:
    return WorkspaceProxy(id=f"id-{name}", name=name, display_name=display_name, icon_url=icon,
                          status=ProxyStatus(status="ok"))


def _replace_site(world: World, name: str, **changes: Any) -> World:
    state = world.sites[name]
    fields = {**state.__dict__, **changes}
    return World(sites={**world.sites, name: SiteState(**fields)}, records=world.records,
                 managed=world.managed)


def _changes(waves: list[Wave]) -> list[Change]:
    return [c for w in waves for c in w.changes]


def _kinds(changes: list[Change]) -> list[tuple[str, str, str]]:
    return [(c.region, c.kind, c.action.value) for c in changes]


# -- first deploy --------------------------------------------------------------------------


def test_empty_world_deploys_primary_then_canary_then_regions_in_order(v1: Topology) -> None:
    waves, notes = deploy_waves(v1, empty_world(v1))
    assert [w.name for w in waves] == ["primary", "canary us-east", "regions"]
    assert notes == []

    primary, canary, regions = waves
    assert _kinds(list(primary.changes)) == [
        ("primary", KIND_NAMESPACE, "create"), ("primary", KIND_RELEASE, "create"),
    ]
    assert _kinds(list(canary.changes)) == [
        ("us-east", KIND_NAMESPACE, "create"), ("us-east", KIND_RELEASE, "create"),
        ("us-east", KIND_SATELLITE, "create"),
    ]
    assert canary.regions == ("us-east",)
    # Regions in inventory order, each: namespace, release, then registration.
    assert _kinds(list(regions.changes)) == [
        (name, kind, "create")
        for name in REGION_ORDER
        for kind in (KIND_NAMESPACE, KIND_RELEASE, KIND_SATELLITE)
    ]
    release = canary.changes[1]
    assert release.depends_on == (canary.changes[0].id,)
    assert canary.changes[2].depends_on == (release.id,)
    assert "enable: true" in release.diff and "primaryURL" in release.diff
    assert not any(c.needs_force for c in _changes(waves))


def test_empty_v2_world_creates_proxy_before_its_release(v2: Topology) -> None:
    waves, _ = deploy_waves(v2, empty_world(v2))
    assert [w.name for w in waves] == ["primary", "canary us-east", "regions"]
    assert _kinds(list(waves[1].changes)) == [
        ("us-east", KIND_NAMESPACE, "create"), ("us-east", KIND_PROXY, "create"),
        ("us-east", KIND_RELEASE, "create"),
    ]
    assert [c.region for c in waves[2].changes if c.kind == KIND_PROXY] == REGION_ORDER
    namespace, proxy, release = waves[1].changes
    assert proxy.depends_on == (namespace.id,)
    assert release.depends_on == (namespace.id, proxy.id)
    assert proxy.written() is not None and proxy.written()["token"] == SENSITIVE
    # The token reaches the proxy through the Secret, never as a value.
    assert "secretKeyRef" in release.diff and "coder-workspace-proxy-token" in release.diff


def test_unreachable_primary_on_first_install_is_a_note(v1: Topology) -> None:
    world = empty_world(v1)
    world = World(sites=world.sites, records=PrimaryRecords(reachable=False), managed={})
    waves, notes = deploy_waves(v1, world)
    assert any("does not answer yet" in n for n in notes)
    assert sum(c.kind == KIND_SATELLITE for c in _changes(waves)) == 5


# -- a deployed world ----------------------------------------------------------------------


@pytest.mark.parametrize("generation", ["v1", "v2"])
def test_deployed_world_with_identical_values_plans_nothing(
    generation: str, v1: Topology, v2: Topology
) -> None:
    topology = v1 if generation == "v1" else v2
    waves, notes = deploy_waves(topology, deployed_world(topology))
    assert waves == [] and notes == []
    assert plan_deploy(topology, deployed_world(topology)).is_empty


def test_chart_version_change_is_an_update_with_its_reason(v1: Topology) -> None:
    world = _replace_site(
        deployed_world(v1), "eu-west",
        release=_release(v1, v1.region("eu-west"), chart="coder-1.20.9"),
    )
    changes = _changes(deploy_waves(v1, world)[0])
    assert _kinds(changes) == [("eu-west", KIND_RELEASE, "update")]
    assert changes[0].reason == "chart coder-1.20.9 -> coder-1.21.0"
    assert "-chart: coder-1.20.9" in changes[0].diff
    assert "+chart: coder-1.21.0" in changes[0].diff


def test_changed_values_show_the_key_in_the_diff(v1: Topology, tmp_path: Path) -> None:
    topology = _with_primary_values(tmp_path, {"coderd": {"replicas": 3}})
    changes = _changes(deploy_waves(topology, deployed_world(v1))[0])
    assert _kinds(changes) == [("primary", KIND_RELEASE, "update")]
    assert changes[0].reason == "values differ"
    assert "-    replicas: 2" in changes[0].diff
    assert "+    replicas: 3" in changes[0].diff
    assert changes[0].before is not None and changes[0].after is not None


@pytest.mark.parametrize(
    "key", ["password", "token", "apiToken", "db_password", "privateKey", "apiKey", "private_key"]
)
def test_sensitive_values_never_appear_in_a_plan(key: str, v1: Topology, tmp_path: Path) -> None:
    before, after = "old-literal-4711", "new-literal-0815"
    topology = _with_primary_values(tmp_path, {"postgres": {key: after, "host": "db-new"}})
    deployed = deployed_world(v1)
    observed_values = {**release_values(v1, v1.primary),
                       "postgres": {key: before, "host": "db-old"}}
    world = _replace_site(deployed, "primary",
                          release=_release(v1, v1.primary, values=observed_values))
    plan = plan_deploy(topology, world)
    text = plan.to_json()
    assert before not in text and after not in text
    (change,) = plan.changes
    assert change.before is not None and change.after is not None
    assert change.snapshot()["values"]["postgres"][key] == SENSITIVE
    assert change.written()["values"]["postgres"][key] == SENSITIVE
    assert change.reason == "values differ"
    assert "+    host: db-new" in change.diff
    assert f"    {key}: {SENSITIVE}" in change.diff


def test_a_changed_secret_alone_is_an_update_without_the_literal(
    v1: Topology, tmp_path: Path
) -> None:
    """Rotating a password in coder_values must reach the release, though both read
    ``(sensitive)`` in the plan."""
    topology = _with_primary_values(tmp_path, {"postgres": {"password": "new-literal-0815"}})
    observed = {**release_values(topology, topology.primary),
                "postgres": {"password": "old-literal-4711"}}
    world = _replace_site(deployed_world(topology), "primary",
                          release=_release(topology, topology.primary, values=observed))
    plan = plan_deploy(topology, world)
    assert _kinds(list(plan.changes)) == [("primary", KIND_RELEASE, "update")]
    (change,) = plan.changes
    assert "sensitive" in change.reason
    text = plan.to_json()
    assert "new-literal-0815" not in text and "old-literal-4711" not in text
    # Applied, the same secret twice is no change.
    same = _replace_site(world, "primary", release=_release(topology, topology.primary))
    assert plan_deploy(topology, same).is_empty


def test_references_to_secrets_stay_readable() -> None:
    """``secretKeyRef.key`` and ``*SecretName`` say where a secret is, not what it is."""
    value = {"secretKeyRef": {"name": "db", "key": "password"}, "passwordSecretName": "db",
             "tls": {"hostSecretName": "coder-tls"}}
    assert mask_sensitive(value) == value


def test_served_key_mismatch_re_registers_the_satellite(v1: Topology) -> None:
    other = SatelliteKey(key="NEW KEY", fingerprint="cd" * 32)
    world = _replace_site(deployed_world(v1), "ap-southeast", satellite_key=other)
    (change,) = _changes(deploy_waves(v1, world)[0])
    assert (change.region, change.kind, change.action) == (
        "ap-southeast", KIND_SATELLITE, Action.UPDATE
    )
    assert "re-register" in change.reason
    assert change.snapshot() == {"name": "ap-southeast", "fingerprint": FINGERPRINT,
                                 "access_url": None}
    assert change.written() == {"name": "ap-southeast", "fingerprint": "cd" * 32,
                                "access_url": None}


def test_reinstalled_satellite_is_re_registered_after_its_release(v1: Topology) -> None:
    world = _replace_site(deployed_world(v1), "eu-west", release=None, satellite_key=None)
    changes = _changes(deploy_waves(v1, world)[0])
    assert _kinds(changes) == [
        ("eu-west", KIND_RELEASE, "create"), ("eu-west", KIND_SATELLITE, "update"),
    ]
    assert changes[1].depends_on == (changes[0].id,)


def test_lost_proxy_token_is_regenerated_not_a_second_proxy(v2: Topology) -> None:
    world = _replace_site(deployed_world(v2), "eu-west", token_secret=False)
    changes = _changes(deploy_waves(v2, world)[0])
    assert _kinds(changes) == [("eu-west", KIND_PROXY_TOKEN, "act")]
    assert "regenerate" in changes[0].reason
    assert changes[0].written() == {"token": SENSITIVE}


def test_proxy_display_name_change_is_an_update(v2: Topology) -> None:
    deployed = deployed_world(v2)
    proxies = {**deployed.records.proxies,
               "us-west": _proxy("us-west", "Old Name", v2.region("us-west").icon)}
    world = World(sites=deployed.sites, managed=deployed.managed,
                  records=PrimaryRecords(reachable=True, proxies=proxies))
    changes = _changes(deploy_waves(v2, world)[0])
    assert _kinds(changes) == [("us-west", KIND_PROXY, "update")]
    assert "'Old Name' -> 'US West'" in changes[0].reason


def test_proxy_without_an_icon_gets_the_regions_flag(v2: Topology) -> None:
    """A proxy created without an icon (real Coder stores none) is updated with the region's
    default icon, the flag of its first country: the real server refuses a PATCH with an empty
    icon, so every PATCH carries one."""
    deployed = deployed_world(v2)
    proxies = {**deployed.records.proxies, "eu-west": _proxy("eu-west", "EU West")}
    world = World(sites=deployed.sites, managed=deployed.managed,
                  records=PrimaryRecords(reachable=True, proxies=proxies))
    (change,) = _changes(deploy_waves(v2, world)[0])
    assert (change.region, change.kind, change.action) == ("eu-west", KIND_PROXY, Action.UPDATE)
    assert change.after == ProxyDoc(display_name="EU West", icon="/emojis/1f1ee-1f1ea.png")
    assert "icon '' -> '/emojis/1f1ee-1f1ea.png'" in change.reason


def test_pending_install_release_is_recovered(v1: Topology) -> None:
    world = _replace_site(
        deployed_world(v1), "us-west",
        release=_release(v1, v1.region("us-west"), status="pending-install"),
    )
    (change,) = _changes(deploy_waves(v1, world)[0])
    assert (change.region, change.kind, change.action) == ("us-west", KIND_RELEASE,
                                                           Action.UPDATE)
    assert "pending-install" in change.reason and "recovers" in change.reason


def test_failed_release_is_updated(v1: Topology) -> None:
    world = _replace_site(deployed_world(v1), "primary",
                          release=_release(v1, v1.primary, status="failed"))
    (change,) = _changes(deploy_waves(v1, world)[0])
    assert change.reason == "release is failed"


# -- removals ------------------------------------------------------------------------------


def _removed(topology: Topology, tmp: Path, name: str) -> Topology:
    def drop(inventory: Path) -> None:
        edit_yaml(inventory / "hosts.yml",
                  lambda d: d["all"]["children"]["coder_regions"]["hosts"].pop(name))
        (inventory / "host_vars" / f"{name}.yml").unlink()

    return _inventory(tmp, generation=topology.generation, edit=drop)


def test_removed_v1_region_is_deregistered_then_uninstalled(
    v1: Topology, tmp_path: Path
) -> None:
    smaller = _removed(v1, tmp_path, "eu-west")
    waves, _ = deploy_waves(smaller, deployed_world(v1))
    assert [w.name for w in waves] == ["removals"]
    changes = list(waves[0].changes)
    assert _kinds(changes) == [
        ("eu-west", KIND_SATELLITE, "delete"), ("eu-west", KIND_RELEASE, "delete"),
        ("eu-west", "SiteRecord", "delete"),
    ]
    assert all(c.needs_force for c in changes)
    assert changes[1].before == ManagedSite.of(v1, v1.region("eu-west"))
    assert changes[2].depends_on == (changes[1].id,), "forgotten once everything is removed"
    plan = plan_deploy(smaller, deployed_world(v1))
    with pytest.raises(PlanError, match=r"3 change\(s\) need --force"):
        plan.raise_if_unsafe(force=False)
    plan.raise_if_unsafe(force=True)


def test_removed_v2_region_is_uninstalled_then_proxy_and_token_deleted(
    v2: Topology, tmp_path: Path
) -> None:
    smaller = _removed(v2, tmp_path, "ap-southeast")
    waves, _ = deploy_waves(smaller, deployed_world(v2))
    changes = list(waves[0].changes)
    assert _kinds(changes) == [
        ("ap-southeast", KIND_RELEASE, "delete"), ("ap-southeast", KIND_PROXY, "delete"),
        ("ap-southeast", KIND_PROXY_TOKEN, "delete"), ("ap-southeast", "SiteRecord", "delete"),
    ]
    assert all(c.needs_force for c in changes)
    assert changes[1].depends_on == (changes[0].id,)
    assert changes[2].depends_on == (changes[0].id,)


def test_removal_respects_limit(v1: Topology, tmp_path: Path) -> None:
    smaller = _removed(v1, tmp_path, "eu-west")
    assert deploy_waves(smaller, deployed_world(v1), limit=["us-west"])[0] == []
    waves, _ = deploy_waves(smaller, deployed_world(v1), limit=["eu-west"])
    assert {c.region for c in _changes(waves)} == {"eu-west"}


def test_unmanaged_registered_satellite_is_a_note_not_a_change(v1: Topology) -> None:
    deployed = deployed_world(v1)
    satellites = {**deployed.records.satellites,
                  "legacy": Satellite(id="x", name="legacy", fingerprint=FINGERPRINT)}
    world = World(sites=deployed.sites, managed=deployed.managed,
                  records=PrimaryRecords(reachable=True, satellites=satellites))
    waves, notes = deploy_waves(v1, world)
    assert waves == []
    assert notes == [
        "satellite legacy is registered on the primary but not in the inventory and was "
        "not deployed by coder-migrate: left alone"
    ]


# -- refusals ------------------------------------------------------------------------------


def test_tls_problems_are_all_listed_before_anything_is_planned(v1: Topology) -> None:
    world = _replace_site(empty_world(v1), "primary", namespace_exists=True,
                          tls_problems=("TLS secret coder-tls does not exist in ctx ns coder",))
    world = _replace_site(world, "eu-west", namespace_exists=True, tls_problems=(
        "TLS secret coder-satellite-cert in ctx ns coder-satellite lacks tls.key",
    ))
    with pytest.raises(PlanError) as raised:
        deploy_waves(v1, world)
    message = str(raised.value)
    assert "primary: TLS secret coder-tls does not exist" in message
    assert "eu-west: TLS secret coder-satellite-cert in ctx ns coder-satellite lacks tls.key" \
        in message
    # Outside the --limit, a TLS problem does not stop the plan.
    assert deploy_waves(v1, world, limit=["us-west"])[0]


def test_limit_with_an_unknown_name_is_refused(v1: Topology) -> None:
    with pytest.raises(PlanError, match="--limit names eu-wets, which is neither"):
        deploy_waves(v1, empty_world(v1), limit=["eu-west", "eu-wets"])


def test_limit_plans_only_the_named_sites(v1: Topology) -> None:
    waves, _ = deploy_waves(v1, empty_world(v1), limit=["eu-west"])
    assert [w.name for w in waves] == ["regions"]
    assert {c.region for c in _changes(waves)} == {"eu-west"}


def test_plan_checksum_is_stable_across_computations(v1: Topology) -> None:
    first = plan_deploy(v1, empty_world(v1))
    second = plan_deploy(v1, empty_world(v1))
    assert first.checksum == second.checksum
    assert json.loads(first.to_json()) == json.loads(second.to_json())
    other = plan_deploy(v1, empty_world(v1), limit=["eu-west"])
    assert other.checksum != first.checksum


# -- the confirmation binds what apply does ------------------------------------------------


def test_apply_applies_only_the_plan_the_user_confirmed(
    v1: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The world changes while the user reads the preview: apply must refuse, not apply the
    plan nobody saw."""
    seen = plan_deploy(v1, empty_world(v1), limit=["eu-west"])
    # Meanwhile someone installs eu-west with another chart: now an update, not a create.
    older = _replace_site(deployed_world(v1), "eu-west",
                          release=_release(v1, v1.region("eu-west"), chart="coder-1.20.9"))
    changed = plan_deploy(v1, older, limit=["eu-west"])
    assert not changed.is_empty and changed.checksum != seen.checksum
    computed = iter([seen, changed, changed])
    applied: list[str] = []

    async def compute(engine: object, scope: object) -> Any:
        return next(computed)

    async def run_plan(engine: object, plan: Any, *args: object) -> Any:
        applied.append(plan.checksum)
        return ApplyReport(run="test")

    async def no_journal(self: object) -> None:
        return None

    monkeypatch.setattr(cli_deploy, "compute_plan", compute)
    monkeypatch.setattr(run, "compute_plan", compute)
    monkeypatch.setattr(apply_module, "run_plan", run_plan)
    monkeypatch.setattr(apply_module.Journal, "version", no_journal)
    monkeypatch.setattr(cli_deploy, "sys", _AtATerminal())
    result = CliRunner().invoke(
        main, ["apply", "-i", v1.source, "--limit", "eu-west"], input="y\n"
    )
    assert applied == [], "applied a plan the user never saw"
    assert result.exit_code == 6, result.output


class _AtATerminal:
    """``sys`` as the CLI sees it when a person runs it: stdin is a terminal."""

    def __getattr__(self, name: str) -> Any:
        if name == "stdin":
            return _TerminalInput(sys.stdin)
        return getattr(sys, name)


class _TerminalInput:
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def test_a_sites_record_naming_a_provider_release_is_refused_not_uninstalled(
    v1: Topology,
) -> None:
    region = v1.regions[0]
    provider = region.workspace_providers[0]
    forged = ManagedSite(
        name="gone", generation="v1", kube_context=region.kube_context,
        namespace=provider.namespace, release=provider.release,
    )
    world = empty_world(v1)
    world = World(sites=world.sites, records=world.records, managed={"gone": forged})
    with pytest.raises(PlanError, match="workspace-provider release kept for rollback"):
        deploy_waves(v1, world)


def test_a_1_20_primary_is_upgraded_alone_and_satellites_wait_for_1_21(v1: Topology) -> None:
    """Coder 1.20 has no satellites (V1 §3): its primary answers no satellite list, so the
    primary's upgrade is planned on its own (the first step of the migration), and a plan
    that would register a satellite on it refuses, naming the step to take first."""
    world = World(
        sites=empty_world(v1).sites,
        records=PrimaryRecords(reachable=True, version="1.20.0"),
        managed={},
    )
    waves, _ = deploy_waves(v1, world, limit=[v1.primary.name])
    assert [w.name for w in waves] == ["primary"]
    assert {c.region for w in waves for c in w.changes} == {v1.primary.name}
    with pytest.raises(PlanError) as refused:
        deploy_waves(v1, world)
    assert str(refused.value) == (
        "us-east: a satellite needs Coder 1.21 or newer on the primary, which runs 1.20.0: "
        "upgrade the primary to 1.21 first (apply --limit with the primary's host only)"
    )
