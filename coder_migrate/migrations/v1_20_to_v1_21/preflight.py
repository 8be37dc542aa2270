"""Preflight: every reason the migration may not start, for all regions in scope at once.

A problem stops the plan before anything changes; each is one ``"<site>: <problem>"`` line.
"""

from __future__ import annotations

from collections.abc import Sequence

from coder_migrate.engine.world import Engine
from coder_migrate.errors import PlanError
from coder_migrate.inventory import Region, Topology
from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION
from coder_migrate.migrations.v1_20_to_v1_21.observe import (
    MigrationState,
    observe_migration,
    regions_in,
)

__all__ = ["preflight", "preflight_problems", "raise_preflight"]


def preflight_problems(
    topology: Topology, state: MigrationState, limit: Sequence[str] = ()
) -> list[str]:
    """Every reason the migration may not start, one ``"<site>: <problem>"`` per entry."""
    if topology.generation != "v1":
        return [f"primary: the {MIGRATION} migration is for coder_generation v1, "
                f"{topology.source} has {topology.generation}"]
    dns = [f"dns: {state.dns_problem}"] if state.dns_problem else []
    if state.primary_problem:
        return [f"primary: {state.primary_problem}", *dns]
    problems = []
    if not state.version_ok:
        problems.append(
            f"primary: the primary runs Coder {state.version or 'unknown'} (coder-version "
            "header): upgrade the primary to 1.21 first"
        )
    for region in regions_in(topology, limit):
        problems += [f"{region.name}: {p}" for p in _region_problems(region, state)]
    return problems + dns


def _region_problems(region: Region, state: MigrationState) -> list[str]:
    problems = []
    if not region.workspace_providers:
        problems.append("coder_workspace_providers is empty: nothing to migrate to a satellite")
    for wanted, seen in zip(
        region.workspace_providers, state.providers.get(region.name, []), strict=False
    ):
        if wanted.namespace == region.namespace:
            problems.append(
                f"coder_workspace_providers {wanted.name}: namespace {wanted.namespace} is the "
                "satellite's own (coder_namespace); the satellite needs a namespace of its own"
            )
        if not seen.found:
            problems.append(
                f"workspace provider {wanted.name!r} (coder_workspace_providers) does not exist "
                "on the primary; name one of Manage > Providers"
            )
        elif seen.status != "ready":
            problems.append(
                f"workspace provider {wanted.name!r} is {seen.status or 'in an unknown state'}, "
                "not ready"
            )
        if seen.release_status != "deployed":
            problems.append(
                f"the old workspace-provider release {wanted.release} in ns {wanted.namespace} of "
                f"{region.kube_context} is {seen.release_status or 'not installed'}, not deployed"
            )
    test = region.test_workspace
    if test is None:
        problems.append("coder_test_workspace is not set: name a workspace to rebuild")
    else:
        seen_ws = state.workspaces.get(region.name)
        if seen_ws is None or not seen_ws.found:
            problems.append(
                f"test workspace {test.name!r} of {test.owner!r} (coder_test_workspace) does not "
                "exist on the primary"
            )
    site = state.sites.get(region.name)
    if site is not None:
        problems += list(site.tls_problems)
    missing = state.access_problems.get(region.name)
    if missing:
        problems.append(
            f"the operator may not create {', '.join(missing)} in ns {region.namespace} of "
            f"{region.kube_context} (SelfSubjectAccessReview)"
        )
    unreachable = state.primary_url_problems.get(region.name)
    if unreachable:
        problems.append(unreachable)
    return problems


async def preflight(engine: Engine, limit: Sequence[str] = ()) -> list[str]:
    """Every problem that stops the migration, for all regions in scope; nothing changes."""
    state = await observe_migration(engine, limit)
    return preflight_problems(engine.topology, state, limit)


def raise_preflight(problems: Sequence[str]) -> None:
    if problems:
        raise PlanError(
            f"preflight found {len(problems)} problem(s); nothing was changed:\n"
            + "\n".join(problems)
        )
