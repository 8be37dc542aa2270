"""The migration's plan: per region the deploy's satellite changes, then its steps; waves are
the deploy's (:func:`~coder_migrate.engine.deploy.region_groups`: the canary alone, then the
other regions), then ``dns`` for the shared and primary names."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from coder_migrate.dns.plan import plan_dns
from coder_migrate.dns.rrset_change import open_adapter
from coder_migrate.engine.apply import ApplyOptions, ApplyReport, apply_operation
from coder_migrate.engine.change import Action, Change, change_id
from coder_migrate.engine.deploy import deploy_waves, region_groups
from coder_migrate.engine.kinds.registration import SatelliteRegistrationChange
from coder_migrate.engine.plan import Plan, Wave
from coder_migrate.engine.run import PlanScope
from coder_migrate.engine.values import TokenSecret
from coder_migrate.engine.world import Engine, World
from coder_migrate.inventory import Region, Topology
from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION
from coder_migrate.migrations.v1_20_to_v1_21.dns_check import DnsCheckChange
from coder_migrate.migrations.v1_20_to_v1_21.networking_v2 import ProviderNetworkingV2Change
from coder_migrate.migrations.v1_20_to_v1_21.observe import (
    ProviderState,
    WorkspaceState,
    observe_migration,
)
from coder_migrate.migrations.v1_20_to_v1_21.preflight import preflight_problems, raise_preflight
from coder_migrate.migrations.v1_20_to_v1_21.rebuild import WorkspaceRebuildChange
from coder_migrate.migrations.v1_20_to_v1_21.retain import RetainReleaseChange

__all__ = ["SHARED_WAVE", "apply_migration", "compute_migration_plan", "migration_waves"]

SHARED_WAVE = "dns"
"""The wave of the shared and primary DNS names (planned only without a limit)."""


def _region_steps(
    region: Region, providers: Sequence[ProviderState], workspace: WorkspaceState | None,
    deploy_ids: Sequence[str], dns_changes: Sequence[Change] = (),
    dns_checked: Collection[str] | None = None,
) -> list[Change]:
    registration = change_id(region.name, SatelliteRegistrationChange.KIND, region.name)
    after = (registration,) if registration in deploy_ids else ()
    changes: list[Change] = [
        ProviderNetworkingV2Change.switch(region.name, p.name, on=True, depends_on=after)
        for p in providers if p.found and not p.networking_v2
    ]
    if workspace is not None and (changes or not workspace.rebuilt):
        why = ("its providers switch to Networking v2 in this plan" if changes
               else "not yet rebuilt by this migration")
        changes.append(WorkspaceRebuildChange.of(
            region, workspace.name, workspace.owner, why=why,
            depends_on=tuple(c.id for c in changes) or after,
        ))
    changes += dns_changes
    effective_dns = [c for c in dns_changes if c.action is not Action.KEEP]
    if dns_checked is not None and (effective_dns or region.name not in dns_checked):
        why = ("its records change in this plan" if effective_dns
               else "not yet checked by this migration")
        changes.append(DnsCheckChange.of(region.name, [region.name], shared=False,
                                         depends_on=tuple(c.id for c in effective_dns[-1:]),
                                         why=why))
    previous = tuple(c.id for c in changes if c.action is not Action.KEEP)[-1:]
    changes += [
        RetainReleaseChange.of(region, wanted, previous)
        for wanted, seen in zip(region.workspace_providers, providers, strict=False)
        if not seen.retained
    ]
    return changes


def _shared_wave(
    topology: Topology, dns_changes: Sequence[Change], dns_checked: Collection[str]
) -> Wave:
    primary = topology.primary.name
    shared = [c for c in dns_changes if c.region == primary]
    effective = [c for c in shared if c.action is not Action.KEEP]
    final = list(shared)
    if effective or primary not in dns_checked:
        final.append(DnsCheckChange.of(
            primary, [r.name for r in topology.regions], shared=True,
            depends_on=tuple(c.id for c in effective[-1:]),
            why="the shared name changes in this plan" if effective
            else "not yet checked by this migration",
        ))
    return Wave(name=SHARED_WAVE, regions=(primary,), changes=tuple(final))


def migration_waves(
    topology: Topology, world: World, provider_states: dict[str, list[ProviderState]],
    workspace_states: dict[str, WorkspaceState], *, limit: Sequence[str] = (),
    token_secret_name: str | None = None, dns_changes: Sequence[Change] = (),
    dns_checked: Collection[str] | None = None,
) -> tuple[list[Wave], list[str]]:
    """The migration's waves (canary, then regions, then ``dns``) and the notes to read.

    *dns_changes* are the zone's changes (:func:`plan_dns`); each region's go after its
    rebuild, those of the primary's and the shared names in the final ``dns`` wave (only
    without *limit*: they serve every region). *dns_checked* names the sites whose DNS check
    this migration finished; ``None`` leaves DNS out of the plan.
    """
    secret = TokenSecret() if token_secret_name is None else TokenSecret(name=token_secret_name)
    deploy, notes = deploy_waves(topology, world, limit=limit, token_secret=secret)
    primary = topology.primary.name
    primary_changes = [c for w in deploy for c in w.changes if c.region == primary]
    if primary_changes:
        notes.append(
            f"the primary differs from the inventory ({len(primary_changes)} change(s)); the "
            "migration does not change the primary: deploy it with `coder-migrate apply`"
        )
    regional: dict[str, list[Change]] = {}
    for wave in deploy:
        if wave.name == "removals":
            continue  # removing regions is the deploy's business, never the migration's
        for change in wave.changes:
            if change.region != primary:
                regional.setdefault(change.region, []).append(change)
    wanted = set(limit)
    waves = []
    for name, regions in region_groups(topology):
        changes: list[Change] = []
        for region in regions:
            if wanted and region.name not in wanted:
                continue
            deploy_changes = regional.get(region.name, [])
            changes += deploy_changes
            changes += _region_steps(
                region, provider_states.get(region.name, []), workspace_states.get(region.name),
                [c.id for c in deploy_changes],
                [c for c in dns_changes if c.region == region.name], dns_checked,
            )
        waves.append(Wave(name=name, regions=tuple(r.name for r in regions),
                          changes=tuple(changes)))
    if dns_checked is not None and not wanted:
        waves.append(_shared_wave(topology, dns_changes, dns_checked))
    return [w for w in waves if w.changes], notes


async def compute_migration_plan(engine: Engine, scope: PlanScope) -> Plan:
    """Preflight every region in scope, then plan; a failed preflight changes nothing.

    One observation serves both: preflight's reads include the deploy's world."""
    state = await observe_migration(engine, scope.limit)
    raise_preflight(preflight_problems(engine.topology, state, scope.limit))
    assert state.world is not None  # a primary that answered was observed with its world
    async with open_adapter(engine.topology) as adapter:
        dns = await plan_dns(engine.topology, adapter)
    waves, notes = migration_waves(
        engine.topology, state.world, state.providers, state.workspaces, limit=scope.limit,
        token_secret_name=engine.token_secret.name, dns_changes=dns.changes,
        dns_checked=state.dns_checked,
    )
    notes.extend(dns.notes)
    return Plan.build(inventory=engine.topology.source, waves=waves, limit=scope.limit,
                      notes=notes, operation=MIGRATION)


async def apply_migration(
    engine: Engine, scope: PlanScope, options: ApplyOptions, saved: Plan | None = None,
    *, source: str = "plan file",
) -> tuple[Plan, ApplyReport]:
    """The migration (preflight first) through the one runner."""
    return await apply_operation(
        engine, MIGRATION, lambda: compute_migration_plan(engine, scope), options, saved,
        source=source,
    )
