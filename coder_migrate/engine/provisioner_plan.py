"""The provisioners' changes: the deploy's (the PSK on the primary and in each region's store,
each region's provisioner release) and ``rotate provisioner-psk``'s waves.

Pure functions of the inventory and :class:`~coder_migrate.engine.provisioners.ProvisionerWorld`.
"""

from __future__ import annotations

import json
from typing import Any

from coder_migrate.engine.apply import ApplyOptions, ApplyReport, apply_operation
from coder_migrate.engine.change import Action, Change, change_id
from coder_migrate.engine.kinds.provisioner_psk import ProvisionerPskChange, PskDoc, psk_change
from coder_migrate.engine.kinds.provisioner_release import (
    ProvisionerReleaseChange,
    ProvisionerReleaseDoc,
    provisioner_values,
)
from coder_migrate.engine.plan import Plan, Wave
from coder_migrate.engine.provisioners import (
    FINGERPRINT_ANNOTATION,
    NEXT_SECRET,
    PENDING,
    PSK_SECRET,
    ProvisionerLeftover,
    ProvisionerWorld,
    check_external_stores,
    observe_provisioners,
    provisioner_chart,
    provisioner_regions,
    psk_secret,
    region_key,
)
from coder_migrate.engine.world import Engine
from coder_migrate.errors import PlanError
from coder_migrate.inventory import Primary, Region, Topology

__all__ = [
    "ROTATE_PSK",
    "apply_rotation",
    "compute_rotation",
    "primary_psk_changes",
    "provisioner_removals",
    "region_provisioner_changes",
    "rotation_plan",
]

ROTATE_PSK = "rotate-provisioner-psk"


def _where(site: Primary | Region) -> str:
    return f"ns {site.namespace} of {site.kube_context}"


def _normalised(values: dict[str, Any]) -> dict[str, Any]:
    normalised: dict[str, Any] = json.loads(json.dumps(values, sort_keys=True, default=str))
    return normalised


def primary_psk_changes(topology: Topology, world: ProvisionerWorld | None) -> list[Change]:
    """The deployment's key, generated once in the primary's Secret."""
    if world is None or world.primary is not None:
        return []
    primary = topology.primary
    return [psk_change(
        primary.name, "generate", Action.CREATE,
        f"Secret {PSK_SECRET} in {_where(primary)}",
        "no provisioner pre-shared key yet: generate one (48 random bytes); only its "
        "fingerprint is ever shown",
        after=PskDoc(secret=PSK_SECRET, fingerprint=PENDING),
    )]


def _copy(region: Region, world: ProvisionerWorld, target_key: str | None,
          depends_on: tuple[str, ...]) -> ProvisionerPskChange | None:
    state = world.regions.get(region.name)
    if region.secret_store.external:
        return None
    have = state.secret if state else None
    if target_key is not None and have == target_key:
        return None
    secret = psk_secret(region)
    return psk_change(
        region.name, "copy", Action.CREATE if have is None else Action.UPDATE,
        f"Secret {secret} in {_where(region)}",
        "the region's store lacks the deployment's key" if have is None
        else f"holds {have}, the primary {target_key or PENDING}: copy the primary's key",
        before=None if have is None else PskDoc(secret=secret, fingerprint=have),
        after=PskDoc(secret=secret, fingerprint=target_key or PENDING),
        depends_on=depends_on,
    )


def _release(topology: Topology, region: Region, world: ProvisionerWorld, key: str,
             depends_on: tuple[str, ...]) -> Change | None:
    assert region.provisioners is not None
    chart = provisioner_chart(topology, region)
    desired_chart = f"{chart.name}-{chart.version}"
    desired = _normalised(provisioner_values(topology, region, key))
    after = ProvisionerReleaseDoc(chart=desired_chart, values=desired)
    name = region.provisioners.release
    target = f"helm release {name} ({chart.name} {chart.version}) in {_where(region)}"
    state = world.regions.get(region.name)
    release = state.release if state else None
    common: dict[str, Any] = {
        "id": change_id(region.name, ProvisionerReleaseChange.KIND, name),
        "region": region.name, "target": target, "after": after, "depends_on": depends_on,
    }
    if release is None:
        return ProvisionerReleaseChange(**common, action=Action.CREATE, reason="not installed")
    observed = _normalised(release.values)
    reasons = []
    if release.status != "deployed":
        reasons.append(f"release is {release.status}")
    if release.chart != desired_chart:
        reasons.append(f"chart {release.chart} -> {desired_chart}")
    if observed != desired:
        rolled = ((observed.get("coder") or {}).get("podAnnotations") or {}).get(
            FINGERPRINT_ANNOTATION)
        reasons.append(f"pods run with key {rolled}, the store holds {key}: roll them"
                       if rolled != key and _without_key(observed) == _without_key(desired)
                       else "values differ")
    if not reasons:
        return None
    return ProvisionerReleaseChange(
        **common, action=Action.UPDATE, reason="; ".join(reasons),
        before=ProvisionerReleaseDoc(chart=release.chart, values=observed),
    )


def _without_key(values: dict[str, Any]) -> dict[str, Any]:
    copy = json.loads(json.dumps(values))
    ((copy.get("coder") or {}).get("podAnnotations") or {}).pop(FINGERPRINT_ANNOTATION, None)
    return dict(copy)


def region_provisioner_changes(
    topology: Topology, world: ProvisionerWorld | None, region: Region,
    depends_on: tuple[str, ...] = (),
) -> list[Change]:
    """A region's key copy and provisioner release (external stores: checked, never written)."""
    if world is None or region.provisioners is None or region.name not in world.regions:
        return []
    check_external_stores(topology, world, (region.name,))
    copy = _copy(region, world, world.primary, depends_on)
    release = _release(topology, region, world, region_key(world, region),
                       (*depends_on, *((copy.id,) if copy is not None else ())))
    return _copy_then_release(region, world, copy, release)


def _copy_then_release(
    region: Region, world: ProvisionerWorld, copy: ProvisionerPskChange | None,
    release: Change | None,
) -> list[Change]:
    """A region's copy and release change; a copy over another key with no release change
    to roll the pods restarts them itself (they read the key only at start)."""
    state = world.regions.get(region.name)
    if (copy is not None and release is None and copy.before is not None
            and state is not None and state.release is not None):
        assert region.provisioners is not None
        copy = copy.model_copy(update={
            "roll_release": region.provisioners.release,
            "reason": copy.reason + "; restart its provisioners, which read the key at start",
        })
    return [c for c in (copy, release) if c is not None]


def provisioner_removals(leftover: ProvisionerLeftover | None) -> list[Change]:
    """What goes of provisioners the inventory no longer asks for: their release is
    uninstalled, then the PSK Secret coder-migrate wrote is deleted (never an external
    store's: only a Secret with coder-migrate's mark is observed as a leftover). Both need
    ``--force``, as every removal."""
    if leftover is None:
        return []
    site, name = leftover.site, leftover.site.name
    where = f"ns {site.namespace} of {site.kube_context}"
    changes: list[Change] = []
    if leftover.release is not None:
        release = leftover.release
        changes.append(ProvisionerReleaseChange(
            id=change_id(name, ProvisionerReleaseChange.KIND, leftover.release_name),
            region=name, action=Action.DELETE,
            target=f"helm release {leftover.release_name} ({release.chart}) in {where}",
            reason=f"{leftover.why}: its provisioner daemons are uninstalled",
            before=ProvisionerReleaseDoc(chart=release.chart,
                                         values=_normalised(release.values)),
            needs_force=True, where=site, release=leftover.release_name,
        ))
    if leftover.secret is not None:
        changes.append(psk_change(
            name, "delete", Action.DELETE, f"Secret {leftover.secret} in {where}",
            f"{leftover.why}: the key coder-migrate copied there is deleted"
            + (" after its provisioners" if changes else ""),
            before=PskDoc(secret=leftover.secret, fingerprint=leftover.secret_key),
            depends_on=tuple(c.id for c in changes), where=site, needs_force=True,
        ))
    return changes


def rotation_plan(topology: Topology, world: ProvisionerWorld | None) -> Plan:
    """``rotate provisioner-psk``: stage a new key, promote it on the primary, copy it to
    every region and roll their provisioners, drop the staged copy. A run killed mid-way
    resumes from the staged key: only what is not done yet is planned."""
    regions = provisioner_regions(topology)
    if world is None or not regions:
        raise PlanError(f"{topology.source}: no region sets coder_provisioners: there is no "
                        "provisioner key to rotate")
    if world.primary is None:
        raise PlanError("the primary has no provisioner key yet: run `coder-migrate apply` "
                        "first")
    external = [r.name for r in regions if r.secret_store.external]
    if external:
        raise PlanError(
            f"{', '.join(external)}: coder_secret_store is external: coder-migrate never "
            "writes those Secrets, so it cannot rotate the key there; rotate it in your store"
        )
    missing = [r.name for r in regions if r.name not in world.regions or
               world.regions[r.name].release is None]
    if missing:
        raise PlanError(f"{', '.join(missing)}: provisioners not installed yet: run "
                        "`coder-migrate apply` first")
    primary = topology.primary
    staged = world.staged
    waves: list[Wave] = []
    if staged is None:
        waves.append(Wave(name="stage", regions=(primary.name,), changes=(psk_change(
            primary.name, "stage", Action.CREATE, f"Secret {NEXT_SECRET} in {_where(primary)}",
            f"a new key (48 random bytes) replaces {world.primary}; kept here until every "
            "region has it, so a run killed mid-way resumes with it",
            after=PskDoc(secret=NEXT_SECRET, fingerprint=PENDING)),)))
    key = staged or PENDING
    if staged is None or world.primary != staged or world.primary_rolled != staged:
        waves.append(Wave(name="primary", regions=(primary.name,), changes=(psk_change(
            primary.name, "promote", Action.UPDATE, f"Secret {PSK_SECRET} in {_where(primary)}",
            "the primary takes the new key and restarts; provisioners still on the old key are "
            "refused until their region rolls (the primary checks one key)",
            before=PskDoc(secret=PSK_SECRET, fingerprint=world.primary),
            after=PskDoc(secret=PSK_SECRET, fingerprint=key)),)))
    region_changes: list[Change] = []
    for region in regions:
        copy = _copy(region, world, staged, ())
        release = _release(topology, region, world, key,
                           (copy.id,) if copy is not None else ())
        region_changes += _copy_then_release(region, world, copy, release)
    if region_changes:
        waves.append(Wave(name="regions", regions=tuple(dict.fromkeys(
            c.region for c in region_changes)), changes=tuple(region_changes)))
    waves.append(Wave(name="drop", regions=(primary.name,), changes=(psk_change(
        primary.name, "drop", Action.DELETE, f"Secret {NEXT_SECRET} in {_where(primary)}",
        "every site has the new key: the staged copy goes",
        before=PskDoc(secret=NEXT_SECRET, fingerprint=key)),)))
    return Plan.build(inventory=topology.source, waves=waves, operation=ROTATE_PSK,
                      notes=["the old key is refused once the primary has the new one"])


async def compute_rotation(engine: Engine, _scope: object = None) -> Plan:
    """Observe the key and the releases; the rotation's remaining waves."""
    return rotation_plan(engine.topology, await observe_provisioners(engine))


async def apply_rotation(
    engine: Engine, _scope: object, options: ApplyOptions, saved: Plan | None = None,
    *, source: str = "plan file",
) -> tuple[Plan, ApplyReport]:
    """The rotation through the one runner: lock, journal, waves."""
    return await apply_operation(engine, ROTATE_PSK, lambda: compute_rotation(engine), options,
                                 saved, source=source)
