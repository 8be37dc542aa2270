"""The deploy operation end to end: observe -> plan (releases, registrations, DNS) -> apply.

The CLI (``plan``, ``apply``) and the Ansible module (``coder_site``) both come through here,
so the two front doors compute the same plan from the same inventory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from coder_migrate.dns.desired import PRIMARY
from coder_migrate.dns.plan import open_adapter, plan_dns
from coder_migrate.engine.apply import ApplyOptions, ApplyReport, apply_plan
from coder_migrate.engine.deploy import deploy_waves
from coder_migrate.engine.plan import Plan, Wave
from coder_migrate.engine.world import Engine

__all__ = [
    "DEPLOY",
    "DEPLOY_WITHOUT_DNS",
    "PlanScope",
    "apply_computed",
    "apply_deploy",
    "compute_plan",
]

DEPLOY = "deploy"
DEPLOY_WITHOUT_DNS = "deploy-without-dns"


@dataclass(frozen=True)
class PlanScope:
    """What a plan covers: ``limit`` regions (all when empty) and whether DNS is part of it."""

    limit: tuple[str, ...] = ()
    dns: bool = True


async def compute_plan(engine: Engine, scope: PlanScope) -> Plan:
    """Observe everything in *scope* and compute the plan; nothing is changed."""
    topology = engine.topology
    world = await engine.observe(scope.limit)
    waves, notes = deploy_waves(topology, world, limit=scope.limit,
                                token_secret=engine.token_secret)
    if scope.dns:
        async with open_adapter(topology) as adapter:
            dns = await plan_dns(topology, adapter)
        wanted = set(scope.limit)
        changes = [
            c for c in dns.changes
            if not wanted or c.region in wanted or (c.region == PRIMARY and "primary" in wanted)
        ]
        waves.append(Wave(name="dns", regions=tuple(dict.fromkeys(c.region for c in changes)),
                          changes=tuple(changes)))
        notes.extend(dns.notes)
    return Plan.build(
        inventory=topology.source, waves=waves, limit=scope.limit, notes=notes,
        operation=DEPLOY if scope.dns else DEPLOY_WITHOUT_DNS,
    )


async def apply_computed(
    engine: Engine, compute: Callable[[], Awaitable[Plan]], options: ApplyOptions,
    saved: Plan | None = None, *, source: str = "plan file",
) -> tuple[Plan, ApplyReport]:
    """Recompute the plan with *compute*, refuse a stale *saved* one, apply under the lock.

    Every operation (deploy, a migration) applies through here."""
    plan = await compute()
    if saved is not None:
        saved.ensure_matches(plan, source=source)
    plan.raise_if_unsafe(force=options.force)
    if plan.is_empty:
        return plan, ApplyReport(run="")
    return plan, await apply_plan(engine, plan, compute, options)


async def apply_deploy(
    engine: Engine, scope: PlanScope, options: ApplyOptions, saved: Plan | None = None,
    *, source: str = "plan file",
) -> tuple[Plan, ApplyReport]:
    """The deployment: :func:`compute_plan` through :func:`apply_computed`."""
    return await apply_computed(
        engine, lambda: compute_plan(engine, scope), options, saved, source=source
    )


def scope_for(limit: Sequence[str], *, dns: bool = True) -> PlanScope:
    return PlanScope(limit=tuple(dict.fromkeys(limit)), dns=dns)
