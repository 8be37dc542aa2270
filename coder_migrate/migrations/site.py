"""The v1.20 -> v1.21 migration for one inventory host, for the Ansible role ``coder_migration``.

A region runs its own steps (satellite, registration, Networking v2, rebuild, its DNS
records and check, retained release) with the same plan and apply as
``coder-migrate migrate apply --limit REGION``. The primary's host runs what only a plan
without ``--limit`` holds: the shared and primary DNS names and the check of every region
(the ``dns`` wave), and only once no region has steps left, so the playbook runs it last.
Check mode plans only; the diff is the plan as :func:`plan_text` writes it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from coder_migrate.engine.apply import ApplyOptions
from coder_migrate.engine.plan import Plan
from coder_migrate.engine.run import scope_for
from coder_migrate.engine.site import SiteOutcome, plan_text
from coder_migrate.engine.world import Engine
from coder_migrate.errors import ConfigError, PlanError
from coder_migrate.inventory import load_topology
from coder_migrate.migrations.v1_20_to_v1_21 import apply_migration, compute_migration_plan

__all__ = ["PRIMARY_SITE", "SHARED_WAVE", "migrate_site"]

PRIMARY_SITE = "primary"
SHARED_WAVE = "dns"
"""The wave of the shared and primary DNS names (planned only without a limit)."""


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
    inventory: Path, region: str, *, check: bool, force: bool = False, lock_wait: float = 120.0
) -> SiteOutcome:
    """Plan (*check*) or apply the migration of *region*, or of the shared names (``primary``)."""
    engine = Engine(load_topology(inventory))
    shared = region == PRIMARY_SITE
    known = [r.name for r in engine.topology.regions]
    if not shared and region not in known:
        raise ConfigError(
            f"{region}: not a region of {inventory} (coder_regions: {', '.join(known)}) "
            f"nor {PRIMARY_SITE}"
        )
    scope = scope_for(() if shared else (region,), dns=False)
    options = ApplyOptions(force=force, lock_wait=lock_wait, reviewed=False)

    async def run() -> Plan:
        plan = await compute_migration_plan(engine, scope)
        if shared:
            _shared_only(plan)
        if check or plan.is_empty:
            return plan
        applied, _ = await apply_migration(engine, scope, options)
        return plan if applied.is_empty else applied

    plan = asyncio.run(run())
    return SiteOutcome(
        changed=not plan.is_empty,
        changes=[change.summary() for change in plan.effective_changes],
        diff=plan_text(plan),
    )
