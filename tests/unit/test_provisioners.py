"""External provisioners (v2) and the regional secret store: inventory rules, the deploy's
and the rotation's changes as pure functions of (inventory, observed world), and that no plan
holds a key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner

from coder_migrate.cli import main
from coder_migrate.engine.change import Action, ApplyContext
from coder_migrate.engine.deploy import deploy_waves
from coder_migrate.engine.kinds.provisioner_psk import ProvisionerPskChange
from coder_migrate.engine.kinds.provisioner_release import (
    ProvisionerReleaseChange,
    provisioner_values,
)
from coder_migrate.engine.plan import Plan
from coder_migrate.engine.provisioner_plan import provisioner_removals, rotation_plan
from coder_migrate.engine.provisioner_status import connected_gate
from coder_migrate.engine.provisioners import (
    PENDING,
    ProvisionerLeftover,
    ProvisionerWorld,
    RegionProvisioners,
    fingerprint,
    new_psk,
)
from coder_migrate.engine.values import release_values
from coder_migrate.engine.world import Engine, ManagedSite, World
from coder_migrate.errors import PlanError
from coder_migrate.inventory import Topology, load_topology
from coder_migrate.kinds import KINDS
from coder_migrate.providers.coder.models_v2 import ProvisionerDaemon
from coder_migrate.providers.helm import ReleaseState
from coder_migrate.providers.kube import KubeCluster
from tests.fakes import FakeCluster
from tests.helpers import REPO, copy_inventory, edit_yaml
from tests.unit.test_engine_deploy import deployed_world

LAB_V2 = REPO / "inventories" / "lab-v2"
REGIONS = ("us-east", "eu-west", "ap-southeast")


def _inventory(tmp: Path, edit: Callable[[Path], None] | None = None) -> Path:
    inventory = copy_inventory(tmp, LAB_V2)
    for name in REGIONS:
        edit_yaml(inventory / "host_vars" / f"{name}.yml",
                  lambda d, n=name: d.update(coder_provisioners={
                      "replicas": 2, "tags": {"region": n}}))
    if edit is not None:
        edit(inventory)
    return inventory


def _validate(inventory: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return load_topology(_inventory(tmp_path_factory.mktemp("prov")))


# -- inventory -------------------------------------------------------------------------------


def test_provisioners_and_stores_are_read(topology: Topology) -> None:
    region = topology.region("eu-west")
    assert region.provisioners is not None
    assert (region.provisioners.replicas, region.provisioners.tags) == (2, {"region": "eu-west"})
    assert region.secret_store.kind == "kubernetes"


@pytest.mark.parametrize(("change", "line"), [
    ({"coder_provisioners": {"tags": {"a,b": "x"}}},
     "eu-west: coder_provisioners.tags: expected tags as name: value"),
    ({"coder_provisioners": {"tags": {"scope": "user"}}},
     "eu-west: coder_provisioners.tags: expected tags other than scope and owner"),
    ({"coder_provisioners": {"replicas": 0}},
     "eu-west: coder_provisioners.replicas: expected"),
    ({"coder_provisioners": {"tags": {"region": "us-east"}}},
     "eu-west: coder_provisioners.tags: expected tags no other region's provisioners have "
     "(us-east"),
    ({"coder_secret_store": {"kind": "external"}},
     "eu-west: coder_secret_store: expected secret: NAME of the Secret your store maintains"),
    ({"coder_secret_store": {"kind": "vault"}}, "eu-west: coder_secret_store.kind: expected"),
    ({"coder_provisioners": None, "coder_secret_store": {"kind": "external", "secret": "s"}},
     "eu-west: coder_secret_store: expected coder_secret_store only where "
     "coder_provisioners is set"),
])
def test_bad_provisioner_settings_are_refused_with_one_line(
    tmp_path: Path, change: dict[str, Any], line: str
) -> None:
    def edit(inventory: Path) -> None:
        def apply(data: dict[str, Any]) -> None:
            data.update({k: v for k, v in change.items() if v is not None})
            for key in [k for k, v in change.items() if v is None]:
                data.pop(key, None)
        edit_yaml(inventory / "host_vars" / "eu-west.yml", apply)

    code, output = _validate(_inventory(tmp_path, edit))
    assert code == 3, output
    assert line in output


def test_provisioners_are_refused_on_v1(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    edit_yaml(inventory / "host_vars" / "eu-west.yml",
              lambda d: d.update(coder_provisioners={"tags": {"region": "eu-west"}}))
    code, output = _validate(inventory)
    assert code == 3
    assert ("eu-west: coder_provisioners: expected no coder_provisioners with "
            "coder_generation v1") in output


# -- the key -------------------------------------------------------------------------------


def test_a_new_key_is_long_random_and_shown_only_by_fingerprint() -> None:
    keys = {new_psk() for _ in range(20)}
    assert len(keys) == 20 and all(len(k) >= 64 for k in keys)  # 48 bytes, base64url
    key = keys.pop()
    shown = fingerprint(key)
    assert shown.startswith("sha256:") and len(shown) == 23 and key not in shown


# -- deploy ----------------------------------------------------------------------------------


def _world(topology: Topology, provisioners: ProvisionerWorld | None) -> World:
    """Everything else deployed as a previous apply leaves it (the lab's v2 chart)."""
    world = deployed_world(topology)
    chart = f"{topology.chart.name}-{topology.chart.version}"
    sites = {name: replace(state, release=replace(state.release, chart=chart))
             for name, state in world.sites.items() if state.release is not None}
    return World(sites=sites, records=world.records, managed=world.managed,
                 provisioners=provisioners)


def _deployed_release(topology: Topology, name: str, key: str) -> ReleaseState:
    region = topology.region(name)
    return ReleaseState(name="coder-provisioner", namespace=region.namespace,
                        chart="coder-provisioner-2.15.0", status="deployed", revision=1,
                        values=provisioner_values(topology, region, key))


def _done(topology: Topology, key: str = "sha256:1111111111111111") -> ProvisionerWorld:
    return ProvisionerWorld(primary=key, regions={
        n: RegionProvisioners(secret=key, release=_deployed_release(topology, n, key))
        for n in REGIONS})


def test_first_deploy_generates_the_key_then_copies_it_and_installs_each_region(
    topology: Topology,
) -> None:
    empty = ProvisionerWorld(primary=None, regions={
        n: RegionProvisioners(secret=None, release=None) for n in REGIONS})
    waves, _ = deploy_waves(topology, _world(topology, empty))
    changes = [(c.region, c.kind, c.action.value) for w in waves for c in w.changes]
    assert ("primary", "ProvisionerPsk", "create") in changes
    for name in REGIONS:
        assert (name, "ProvisionerPsk", "create") in changes
        assert (name, "ProvisionerRelease", "create") in changes
    # The primary takes the key from the Secret its chart names (provisionerDaemon.pskSecretName).
    assert release_values(topology, topology.primary)["provisionerDaemon"] == {
        "pskSecretName": "coder-provisioner-psk"}
    release = next(c for w in waves for c in w.changes if c.kind == "ProvisionerRelease")
    values = release.model_dump(mode="json")["after"]["values"]
    assert values["coder"]["replicaCount"] == 2
    assert values["provisionerDaemon"] == {"pskSecretName": "coder-provisioner-psk",
                                           "tags": {"region": release.region}}
    assert values["coder"]["podAnnotations"] == {"coder-migrate/provisioner-psk": PENDING}


def test_a_deployed_world_plans_nothing_and_a_wrong_region_key_is_copied_again(
    topology: Topology,
) -> None:
    world = _done(topology)
    waves, _ = deploy_waves(topology, _world(topology, world))
    assert [c.id for w in waves for c in w.changes] == []
    wrong = ProvisionerWorld(primary=world.primary, regions={
        **world.regions, "eu-west": RegionProvisioners(
            secret="sha256:2222222222222222", release=world.regions["eu-west"].release)})
    waves, _ = deploy_waves(topology, _world(topology, wrong))
    assert [(c.region, c.kind, c.action.value) for w in waves for c in w.changes] == [
        ("eu-west", "ProvisionerPsk", "update")]
    # The release already names the primary's key, so no helm upgrade rolls the pods; but a
    # pod that started while the store held the other key read that one: the copy restarts
    # them, and apply waits for them as after a roll.
    copy = waves[0].changes[0]
    assert isinstance(copy, ProvisionerPskChange)
    assert copy.roll_release == "coder-provisioner"
    assert "restart its provisioners" in copy.describe()
    gate = copy.verify(ApplyContext(engine=cast(Engine, _Sites(topology)), run="r",
                                    gate_timeout=1))
    assert gate is not None and gate.site == "eu-west"


class _Sites:
    """An engine that only knows the inventory's sites (what ``verify`` reads)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology

    def site(self, name: str) -> object:
        return self.topology.region(name)


def test_an_external_store_is_never_written_and_a_missing_secret_refuses_the_plan(
    tmp_path: Path,
) -> None:
    inventory = _inventory(tmp_path, lambda inv: edit_yaml(
        inv / "host_vars" / "eu-west.yml",
        lambda d: d.update(coder_secret_store={"kind": "external", "secret": "from-vault"})))
    topology = load_topology(inventory)
    world = _done(topology)
    missing = ProvisionerWorld(primary=world.primary, regions={
        **world.regions, "eu-west": RegionProvisioners(secret=None, release=None)})
    with pytest.raises(PlanError) as refused:
        deploy_waves(topology, _world(topology, missing))
    assert str(refused.value).splitlines() == [
        "eu-west: coder_secret_store: Secret from-vault with key psk not found in ns "
        "coder-proxy of lab-eu-west; have your store create it (coder-migrate never writes an "
        "external store)"]
    present = ProvisionerWorld(primary=world.primary, regions={
        **world.regions, "eu-west": RegionProvisioners(secret=world.primary, release=None)})
    waves, _ = deploy_waves(topology, _world(topology, present))
    assert [(c.region, c.kind) for w in waves for c in w.changes] == [
        ("eu-west", "ProvisionerRelease")]


# -- rotation --------------------------------------------------------------------------------


def test_rotation_stages_promotes_copies_rolls_and_drops(topology: Topology) -> None:
    plan = rotation_plan(topology, _done(topology))
    assert [w.name for w in plan.waves] == ["stage", "primary", "regions", "drop"]
    regions = plan.waves[2]
    assert [(c.region, c.kind, c.action.value) for c in regions.changes] == [
        (n, kind, "update") for n in REGIONS for kind in ("ProvisionerPsk", "ProvisionerRelease")]
    # The release's new annotation rolls the pods: the copy restarts nothing itself.
    assert all(c.roll_release == "" for c in regions.changes if isinstance(c, ProvisionerPskChange))
    # A plan file holds fingerprints, never a key, and reads back through the kinds.
    text = plan.to_json()
    assert Plan.from_json(text, kinds=KINDS, source="test").checksum == plan.checksum


def test_a_rotation_killed_after_the_primary_resumes_with_the_staged_key(
    topology: Topology,
) -> None:
    old, new = "sha256:1111111111111111", "sha256:3333333333333333"
    done = _done(topology, old)
    half = ProvisionerWorld(primary=new, staged=new, primary_rolled=new, regions={
        **done.regions,
        "us-east": RegionProvisioners(secret=new,
                                      release=_deployed_release(topology, "us-east", new))})
    plan = rotation_plan(topology, half)
    assert [w.name for w in plan.waves] == ["regions", "drop"]
    assert [(c.region, c.kind) for c in plan.waves[0].changes] == [
        (n, kind) for n in ("eu-west", "ap-southeast")
        for kind in ("ProvisionerPsk", "ProvisionerRelease")]
    finished = ProvisionerWorld(primary=new, staged=new, primary_rolled=new, regions={
        n: RegionProvisioners(secret=new, release=_deployed_release(topology, n, new))
        for n in REGIONS})
    assert [w.name for w in rotation_plan(topology, finished).waves] == ["drop"]


def test_rotation_refuses_external_stores_and_undeployed_provisioners(tmp_path: Path) -> None:
    topology = load_topology(_inventory(tmp_path, lambda inv: edit_yaml(
        inv / "host_vars" / "ap-southeast.yml",
        lambda d: d.update(coder_secret_store={"kind": "external", "secret": "from-vault"}))))
    with pytest.raises(PlanError, match=r"^ap-southeast: coder_secret_store is external"):
        rotation_plan(topology, _done(topology))
    with pytest.raises(PlanError, match=r"run `coder-migrate apply` first"):
        rotation_plan(topology, ProvisionerWorld(primary=None))


# -- removal ---------------------------------------------------------------------------------


def _leftover(topology: Topology, name: str, why: str, *, secret: bool = True,
              ) -> ProvisionerLeftover:
    site = ManagedSite.of(topology, topology.region(name))
    assert site.provisioners is not None
    key = "sha256:1111111111111111"
    return ProvisionerLeftover(
        site=site, why=why, release_name=site.provisioners.release,
        release=_deployed_release(topology, name, key),
        secret=site.provisioners.secret if secret else None, secret_key=key if secret else None)


def test_removed_provisioners_are_uninstalled_then_their_key_deleted_and_only_once(
    tmp_path: Path, topology: Topology,
) -> None:
    """A region taken out of the inventory and a region whose coder_provisioners is dropped:
    the plan names the release (with its chart) and the Secret (by fingerprint) that go, in
    that order, behind --force; once they are gone (nothing observed) nothing is planned."""
    def drop(inventory: Path) -> None:
        edit_yaml(inventory / "host_vars" / "ap-southeast.yml",
                  lambda d: d.pop("coder_provisioners"))
        edit_yaml(inventory / "hosts.yml", lambda d: d["all"]["children"]["coder_regions"][
            "hosts"].pop("eu-west"))

    after = load_topology(_inventory(tmp_path, drop))
    leftovers = {
        "eu-west": _leftover(topology, "eu-west", "the region is no longer in the inventory"),
        "ap-southeast": _leftover(topology, "ap-southeast",
                                  "coder_provisioners is no longer set for the region"),
    }
    base = _world(topology, _done(topology))
    world = replace(base, provisioners=replace(base.provisioners, regions={
        "us-east": base.provisioners.regions["us-east"]}), provisioner_leftovers=leftovers)
    waves, _ = deploy_waves(after, world)
    assert [w.name for w in waves] == ["removals"]
    lines = [(c.region, c.kind, c.needs_force, c.describe()) for c in waves[0].changes]
    where = "in ns coder-proxy of lab-{}"
    assert lines[:2] == [
        ("eu-west", "ProvisionerRelease", True,
         f"delete helm release coder-provisioner (coder-provisioner-2.15.0) "
         f"{where.format('eu-west')}: the region is no longer in the inventory: its "
         "provisioner daemons are uninstalled"),
        ("eu-west", "ProvisionerPsk", True,
         f"delete Secret coder-provisioner-psk {where.format('eu-west')}: the region is no "
         "longer in the inventory: the key coder-migrate copied there is deleted after its "
         "provisioners"),
    ]
    assert [(r, k) for r, k, _, _ in lines[2:]] == [
        ("eu-west", "HelmRelease"), ("eu-west", "WorkspaceProxy"), ("eu-west", "ProxyToken"),
        ("eu-west", "SiteRecord"),
        ("ap-southeast", "ProvisionerRelease"), ("ap-southeast", "ProvisionerPsk")]
    assert lines[-1][3].startswith(
        f"delete Secret coder-provisioner-psk {where.format('ap-southeast')}: "
        "coder_provisioners is no longer set for the region")
    secret = waves[0].changes[-1].model_dump(mode="json")
    assert secret["before"] == {"secret": "coder-provisioner-psk",
                                "fingerprint": "sha256:1111111111111111"}
    assert secret["depends_on"] == ["ap-southeast/ProvisionerRelease/coder-provisioner"]
    plan = Plan.build(inventory=after.source, waves=waves)
    with pytest.raises(PlanError, match="--force"):
        plan.raise_if_unsafe(force=False)
    assert Plan.from_json(plan.to_json(), kinds=KINDS, source="test").checksum == plan.checksum
    # Gone: nothing is observed, nothing planned (the region's own removal aside).
    gone = replace(world, provisioner_leftovers={})
    assert [c.kind for w in deploy_waves(after, gone)[0] for c in w.changes
            if c.kind.startswith("Provisioner")] == []


def test_an_external_store_is_recorded_as_never_written_and_not_deleted(tmp_path: Path) -> None:
    topology = load_topology(_inventory(tmp_path, lambda inv: edit_yaml(
        inv / "host_vars" / "eu-west.yml",
        lambda d: d.update(coder_secret_store={"kind": "external", "secret": "from-vault"}))))
    recorded = ManagedSite.of(topology, topology.region("eu-west")).provisioners
    assert recorded is not None and (recorded.release, recorded.secret) == (
        "coder-provisioner", None)
    own = ManagedSite.of(topology, topology.region("us-east")).provisioners
    assert own is not None and own.secret == "coder-provisioner-psk"
    leftover = _leftover(topology, "eu-west", "coder_provisioners is no longer set for the "
                         "region", secret=False)
    assert [c.kind for c in provisioner_removals(leftover)] == ["ProvisionerRelease"]


# -- apply waits for the daemons -------------------------------------------------------------


class _Primary:
    """The primary's daemons list, as ``GET /api/v2/provisionerdaemons`` answers."""

    def __init__(self, daemons: list[ProvisionerDaemon]) -> None:
        self.daemons = daemons

    def coder_v2(self) -> _Primary:
        return self

    async def __aenter__(self) -> _Primary:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def provisioner_daemons(self) -> list[ProvisionerDaemon]:
        return self.daemons


def _daemon(name: str, region: str, seen: datetime) -> ProvisionerDaemon:
    return ProvisionerDaemon(id=name, name=name, last_seen_at=seen,
                             tags={"region": region, "scope": "organization", "owner": ""})


def test_the_gate_counts_only_the_regions_daemons_seen_since_the_change(
    topology: Topology,
) -> None:
    """After an install or a roll the wave waits until the primary lists as many daemons as
    replicas with the region's tags, seen since the change; until then it says which region,
    which tags and how many of how many (the runner adds the region and the timeout)."""
    primary = _Primary([])
    region = topology.region("eu-west")
    gate = connected_gate(cast(Engine, primary), region)
    assert gate.site == "eu-west"
    before = datetime.now(UTC) - timedelta(seconds=5)
    later = datetime.now(UTC) + timedelta(seconds=1)
    primary.daemons = [_daemon("old", "eu-west", before), _daemon("a", "eu-west", later),
                       _daemon("other", "us-east", later)]
    problem = asyncio.run(gate.check())
    assert problem.startswith("the primary lists 1 of 2 provisioner daemons (replicas) with "
                              "tags region=eu-west connected since "), problem
    primary.daemons.append(_daemon("b", "eu-west", later))
    assert asyncio.run(gate.check()) == ""
    change = ProvisionerReleaseChange(id="eu-west/ProvisionerRelease/coder-provisioner",
                                      region="eu-west", action=Action.DELETE, target="t",
                                      reason="r")
    ctx = ApplyContext(engine=cast(Engine, primary), run="r", gate_timeout=1)
    assert change.verify(ctx) is None  # an uninstall waits for nothing


def test_the_sites_record_keeps_provisioners_until_the_region_is_forgotten(
    tmp_path: Path, topology: Topology,
) -> None:
    """Installing provisioners records their release and key Secret with the region; a later
    record of the region without coder_provisioners (its Coder release upgraded) keeps them,
    and one with an external store keeps the Secret coder-migrate wrote, so a plan can still
    find and remove them; forgetting the region drops everything."""
    engine = Engine(topology)
    primary = topology.primary
    cluster = FakeCluster()
    engine._kube[(primary.kube_context, engine.path(primary.kubeconfig))] = cast(
        KubeCluster, cluster)
    dropped = load_topology(_inventory(tmp_path, lambda inv: edit_yaml(
        inv / "host_vars" / "eu-west.yml", lambda d: d.pop("coder_provisioners"))))

    async def run() -> None:
        await engine.record_site(ManagedSite.of(topology, topology.region("eu-west")))
        without = ManagedSite.of(dropped, dropped.region("eu-west"))
        assert without.provisioners is None
        await engine.record_site(without)
        recorded = (await engine.managed_sites())["eu-west"].provisioners
        assert recorded is not None
        assert (recorded.release, recorded.secret) == ("coder-provisioner", "coder-provisioner-psk")
        vault = load_topology(_inventory(tmp_path / "vault", lambda inv: edit_yaml(
            inv / "host_vars" / "eu-west.yml", lambda d: d.update(
                coder_secret_store={"kind": "external", "secret": "from-vault"}))))
        await engine.record_site(ManagedSite.of(vault, vault.region("eu-west")))
        recorded = (await engine.managed_sites())["eu-west"].provisioners
        assert recorded is not None and recorded.secret == "coder-provisioner-psk"
        await engine.record_site(None, remove="eu-west")
        assert "eu-west" not in await engine.managed_sites()

    asyncio.run(run())
