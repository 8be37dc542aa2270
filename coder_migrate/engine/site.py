"""One site through the engine, for the Ansible roles (module ``coder_site``).

The roles converge one inventory host at a time (``primary`` or a region) with the same plan
and apply as the CLI, limited to that site and without DNS (the ``geodns`` role owns DNS on
the Ansible side). Check mode plans only; the diff is the plan as ``plan`` prints it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coder_migrate.engine.apply import ApplyOptions
from coder_migrate.engine.plan import Plan
from coder_migrate.engine.run import apply_deploy, compute_plan, scope_for
from coder_migrate.engine.world import Engine
from coder_migrate.inventory import load_topology

__all__ = ["SiteOutcome", "converge_site", "plan_text"]


@dataclass(frozen=True)
class SiteOutcome:
    changed: bool
    """The site's plan was not empty (in check mode: apply would change something)."""
    changes: list[str] = field(default_factory=list)
    diff: str = ""

    def module_result(self, *, want_diff: bool) -> dict[str, Any]:
        """The result an Ansible module returns for this outcome (``--diff`` adds the plan)."""
        result: dict[str, Any] = {"changed": self.changed, "changes": list(self.changes)}
        if want_diff:
            result["diff"] = {"prepared": self.diff}
        return result


def plan_text(plan: Plan) -> str:
    """The plan as plain text (sensitive values are already ``(sensitive)`` in a plan)."""
    lines = []
    for wave in plan.waves:
        for change in wave.effective:
            lines.append(f"{change.action.value} {change.target}: {change.reason}")
            lines.extend(f"    {line}" for line in change.diff.splitlines())
    lines.extend(f"note: {note}" for note in plan.notes)
    return "\n".join(lines) + ("\n" if lines else "")


def converge_site(
    inventory: Path, site: str, *, check: bool, force: bool = False, lock_wait: float = 120.0
) -> SiteOutcome:
    engine = Engine(load_topology(inventory))
    scope = scope_for([site], dns=False)

    async def run() -> Plan:
        if check:
            return await compute_plan(engine, scope)
        plan, _ = await apply_deploy(
            engine, scope, ApplyOptions(force=force, lock_wait=lock_wait, reviewed=False)
        )
        return plan

    plan = asyncio.run(run())
    return SiteOutcome(
        changed=not plan.is_empty,
        changes=[change.summary() for change in plan.effective_changes],
        diff=plan_text(plan),
    )
