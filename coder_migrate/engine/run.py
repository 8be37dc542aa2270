"""The deploy operation end to end: observe -> plan (releases, registrations, DNS) -> apply.

The CLI (``plan``, ``apply``) and the Ansible module (``coder_site``) both come through here,
so the two front doors compute the same plan from the same inventory and apply it through
the one runner (:func:`coder_migrate.engine.apply.apply_operation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coder_migrate.dns.plan import open_adapter, plan_dns
from coder_migrate.engine.apply import ApplyOptions, ApplyReport, apply_operation
from coder_migrate.engine.deploy import deploy_waves
from coder_migrate.engine.plan import Plan, Wave
from coder_migrate.engine.world import Engine

__all__ = [
    "DEPLOY",
    "DEPLOY_WITHOUT_DNS",
    "DNS",
    "PlanScope",
    "apply_deploy",
    "apply_dns",
    "compute_dns_plan",
    "compute_plan",
    "scope_for",
]

DEPLOY = "deploy"
DEPLOY_WITHOUT_DNS = "deploy-without-dns"
DNS = "dns"


@dataclass(frozen=True)
class PlanScope:
    """What a plan covers: ``limit`` sites (all when empty) and whether DNS is part of it."""

    limit: tuple[str, ...] = ()
    dns: bool = True


async def _dns_wave(engine: Engine, limit: Sequence[str]) -> tuple[Wave, tuple[str, ...]]:
    """The zone's changes of the sites in *limit* (all when empty), and the DNS notes."""
    async with open_adapter(engine.topology) as adapter:
        dns = await plan_dns(engine.topology, adapter)
    wanted = set(limit)
    changes = [c for c in dns.changes if not wanted or c.region in wanted]
    wave = Wave(name="dns", regions=tuple(dict.fromkeys(c.region for c in changes)),
                changes=tuple(changes))
    return wave, dns.notes


async def compute_plan(engine: Engine, scope: PlanScope) -> Plan:
    """Observe everything in *scope* and compute the plan; nothing is changed."""
    topology = engine.topology
    world = await engine.observe(scope.limit)
    waves, notes = deploy_waves(topology, world, limit=scope.limit,
                                token_secret=engine.token_secret)
    if scope.dns:
        wave, dns_notes = await _dns_wave(engine, scope.limit)
        waves.append(wave)
        notes.extend(dns_notes)
    return Plan.build(
        inventory=topology.source, waves=waves, limit=scope.limit, notes=notes,
        operation=DEPLOY if scope.dns else DEPLOY_WITHOUT_DNS,
    )


async def compute_dns_plan(engine: Engine) -> Plan:
    """The zone alone (the ``geodns`` role's ``dns_records`` module): one ``dns`` wave."""
    wave, notes = await _dns_wave(engine, ())
    return Plan.build(inventory=engine.topology.source, waves=[wave], notes=notes,
                      operation=DNS)


async def apply_deploy(
    engine: Engine, scope: PlanScope, options: ApplyOptions, saved: Plan | None = None,
    *, source: str = "plan file",
) -> tuple[Plan, ApplyReport]:
    """The deployment: :func:`compute_plan` through the one runner."""
    operation = DEPLOY if scope.dns else DEPLOY_WITHOUT_DNS
    return await apply_operation(
        engine, operation, lambda: compute_plan(engine, scope), options, saved, source=source
    )


async def apply_dns(engine: Engine, options: ApplyOptions) -> tuple[Plan, ApplyReport]:
    """The zone's records through the one runner: lock, journal, stale check."""
    return await apply_operation(engine, DNS, lambda: compute_dns_plan(engine), options)


def scope_for(limit: Sequence[str], *, dns: bool = True) -> PlanScope:
    return PlanScope(limit=tuple(dict.fromkeys(limit)), dns=dns)
