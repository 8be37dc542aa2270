"""The plan a runbook describes: the migration planner run on an assumed pre-migration world.

The world is built from the inventory alone, so a runbook needs no cluster, Coder or DNS
access: the primary is deployed as the inventory says (it is upgraded to 1.21 before the
migration and the migration never changes it), no region has anything of its satellite,
every workspace provider exists, is ``ready``, has Networking v2 off and its old release
deployed, every test workspace exists, and the zone holds none of coder-migrate's records.
The waves come from :func:`coder_migrate.migrations.v1_20_to_v1_21.plan.migration_waves`, the
same function ``migrate plan`` and ``migrate apply`` use, so the runbook cannot drift
from what apply does.
"""

from __future__ import annotations

from pathlib import Path

from coder_migrate.dns.desired import desired_state
from coder_migrate.dns.plan import diff_rrsets
from coder_migrate.dns.rrset_change import DnsRRSetChange
from coder_migrate.engine.plan import Plan
from coder_migrate.engine.values import release_values
from coder_migrate.engine.world import PrimaryRecords, SiteState, World
from coder_migrate.errors import ConfigError
from coder_migrate.inventory import Topology
from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION
from coder_migrate.migrations.v1_20_to_v1_21.observe import ProviderState, WorkspaceState
from coder_migrate.migrations.v1_20_to_v1_21.plan import migration_waves
from coder_migrate.providers.dns.base import Capabilities
from coder_migrate.providers.helm import ReleaseState, chart_source

__all__ = ["ASSUMPTIONS", "assumed_plan", "assumed_world", "check_region"]

ASSUMPTIONS = (
    "the primary already runs Coder 1.21 and matches the inventory (the migration never "
    "changes it)",
    "no region has a satellite namespace, release or registration yet",
    "every workspace provider in coder_workspace_providers exists on the primary, is ready, "
    "has Networking v2 off, and its old release is deployed",
    "every test workspace in coder_test_workspace exists",
    "the DNS zone holds none of coder-migrate's records yet (a PowerDNS server with LUA "
    "records and EDNS Client Subnet, when the provider is powerdns)",
)
"""What the runbook's plan assumes; `migrate plan` shows the plan for the world as it is."""


def assumed_world(topology: Topology) -> World:
    """The primary deployed as the inventory says; nothing of any region."""
    primary = topology.primary
    source = chart_source(topology.chart_for(primary),
                          Path(topology.source) if topology.source else None)
    release = ReleaseState(
        name=primary.release, namespace=primary.namespace,
        chart=f"{source.name}-{source.version}", status="deployed", revision=1,
        values=release_values(topology, primary),
    )
    sites = {primary.name: SiteState(name=primary.name, namespace_exists=True, release=release,
                                     pods_ready=1, pods_total=1)}
    for region in topology.regions:
        sites[region.name] = SiteState(name=region.name, namespace_exists=False, release=None)
    return World(sites=sites, records=PrimaryRecords(reachable=True, version=topology.version),
                 managed={})


def _providers(topology: Topology) -> dict[str, list[ProviderState]]:
    return {
        region.name: [
            ProviderState(region=region.name, name=p.name, found=True, provider_id=p.name,
                          status="ready", networking_v2=False, release_status="deployed")
            for p in region.workspace_providers
        ]
        for region in topology.regions
    }


def _workspaces(topology: Topology) -> dict[str, WorkspaceState]:
    return {
        region.name: WorkspaceState(region=region.name, name=test.name, owner=test.owner,
                                    found=True, workspace_id=test.name)
        for region in topology.regions if (test := region.test_workspace) is not None
    }


def _dns_changes(topology: Topology) -> tuple[tuple[DnsRRSetChange, ...], tuple[str, ...]]:
    provider = topology.dns.provider
    geo = provider == "powerdns"
    capabilities = Capabilities(provider=provider, lua_records=geo, client_subnet=geo)
    dns = diff_rrsets(desired_state(topology, capabilities), [], provider=provider)
    return dns.changes, dns.notes


def check_region(topology: Topology, region: str | None) -> None:
    """Refuse a v2 inventory, or a ``--region`` it does not have (before any planning)."""
    if topology.generation != "v1":
        raise ConfigError(
            f"{topology.source}: the {MIGRATION} runbook is for coder_generation v1, "
            f"the inventory has {topology.generation}"
        )
    names = [r.name for r in topology.regions]
    if region is not None and region not in names:
        raise ConfigError(
            f"--region {region}: not a region of {topology.source} "
            f"(regions: {', '.join(names)})"
        )


def assumed_plan(topology: Topology, region: str | None = None) -> Plan:
    """The migration plan for *region* (``--limit``), or every region, of the assumed world."""
    check_region(topology, region)
    limit = (region,) if region is not None else ()
    dns_changes, dns_notes = _dns_changes(topology)
    waves, notes = migration_waves(
        topology, assumed_world(topology), _providers(topology), _workspaces(topology),
        limit=limit, dns_changes=dns_changes, dns_checked=set(),
    )
    return Plan.build(inventory=topology.source, waves=waves, limit=limit,
                      notes=[*notes, *dns_notes], operation=MIGRATION)
