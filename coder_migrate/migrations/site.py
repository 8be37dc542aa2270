"""The v1.20 -> v1.21 migration for one inventory host, for the Ansible role ``coder_migration``.

A region runs its own steps (satellite, registration, Networking v2, rebuild, its DNS
records and check, retained release) with the same plan and runner as
``coder-migrate migrate apply --limit REGION``. The primary's host (whatever its name) runs
what only a plan without ``--limit`` holds: the shared and primary DNS names and the check of
every region (the ``dns`` wave), and only once no region has steps left, so the playbook runs
it last. Check mode plans only; the diff is the plan as :func:`plan_text` writes it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from coder_migrate.engine.apply import ApplyOptions, apply_operation
from coder_migrate.engine.plan import Plan
from coder_migrate.engine.run import scope_for
from coder_migrate.engine.site import SiteOutcome, outcome
from coder_migrate.engine.world import Engine
from coder_migrate.errors import ConfigError, PlanError
from coder_migrate.inventory import load_topology
from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION
from coder_migrate.migrations.v1_20_to_v1_21.plan import SHARED_WAVE, compute_migration_plan

__all__ = ["migrate_site"]


def _shared_only(plan: Plan) -> Plan:
    """*plan* if only its shared ``dns`` wave has changes; else refuse naming the regions."""
    pending = sorted({c.region for w in plan.waves if w.name != SHARED_WAVE for c in w.effective})
    if pending:
        raise PlanError(
            f"the shared DNS names wait for the regions; migration steps are left in "
            f"{', '.join(pending)}: migrate them first (playbooks/migrate.yml runs the "
            "regions before the primary)"
        )
    return plan


def migrate_site(
    inventory: Path, host: str, *, check: bool, force: bool = False, lock_wait: float = 120.0
) -> SiteOutcome:
    """Plan (*check*) or apply the migration of the region *host*, or of the shared names
    when *host* is the primary's."""
    engine = Engine(load_topology(inventory))
    primary = engine.topology.primary.name
    shared = host == primary
    known = [r.name for r in engine.topology.regions]
    if not shared and host not in known:
        raise ConfigError(
            f"{host}: not a region of {inventory} (coder_regions: {', '.join(known)}) "
            f"nor its primary ({primary})"
        )
    scope = scope_for(() if shared else (host,), dns=False)

    async def compute() -> Plan:
        plan = await compute_migration_plan(engine, scope)
        return _shared_only(plan) if shared else plan

    async def run() -> Plan:
        if check:
            return await compute()
        options = ApplyOptions(force=force, lock_wait=lock_wait)
        plan, _ = await apply_operation(engine, MIGRATION, compute, options)
        return plan

    return outcome(asyncio.run(run()))
