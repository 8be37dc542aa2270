"""One site through the engine, for the Ansible roles (modules ``coder_site``, ``dns_records``).

The roles converge one inventory host at a time (the primary, under whatever name the
``coder_primary`` group gives it, or a region) with the same plan and runner as the CLI,
limited to that site and without DNS; the ``geodns`` role applies the zone through the same
runner (:func:`converge_dns`), whose DNS wave ends with the verify step as ``apply``'s does.
Check mode plans only; the diff is the plan as ``plan`` prints it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coder_migrate.dns.verify import DEFAULT_VERIFY_TIMEOUT
from coder_migrate.engine.apply import ApplyOptions
from coder_migrate.engine.change import Action
from coder_migrate.engine.plan import Plan
from coder_migrate.engine.run import (
    apply_deploy,
    apply_dns,
    compute_dns_plan,
    compute_plan,
    scope_for,
)
from coder_migrate.engine.world import Engine
from coder_migrate.inventory import load_topology

__all__ = ["DnsOutcome", "SiteOutcome", "converge_dns", "converge_site", "outcome", "plan_text",
           "provisioner_key"]


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
            lines.append(change.describe())
            lines.extend(f"    {line}" for line in change.diff.splitlines())
    lines.extend(f"note: {note}" for note in plan.notes)
    return "\n".join(lines) + ("\n" if lines else "")


def outcome(plan: Plan) -> SiteOutcome:
    return SiteOutcome(
        changed=not plan.is_empty,
        changes=[change.describe() for change in plan.effective_changes],
        diff=plan_text(plan),
    )


def converge_site(
    inventory: Path, site: str, *, check: bool, force: bool = False, lock_wait: float = 120.0
) -> SiteOutcome:
    engine = Engine(load_topology(inventory))
    scope = scope_for([site], dns=False)

    async def run() -> Plan:
        if check:
            return await compute_plan(engine, scope)
        plan, _ = await apply_deploy(engine, scope, ApplyOptions(force=force, lock_wait=lock_wait))
        return plan

    return outcome(asyncio.run(run()))


def provisioner_key(
    inventory: Path, site: str, *, check: bool, force: bool = False, lock_wait: float = 120.0,
    rotate: bool = False,
) -> SiteOutcome:
    """The provisioners' key from the primary (*site*): with *rotate*, a new one in waves
    (``coder-migrate rotate provisioner-psk``); without, only an interrupted rotation is
    finished (nothing to do when none is under way)."""
    from coder_migrate.engine.provisioner_plan import apply_rotation, compute_rotation
    from coder_migrate.engine.provisioners import observe_provisioners
    from coder_migrate.errors import ConfigError

    engine = Engine(load_topology(inventory))
    if site != engine.topology.primary.name:
        raise ConfigError(f"{site}: the provisioners' key is rotated from the primary "
                          f"({engine.topology.primary.name}), not from a region")

    async def run() -> Plan:
        if not rotate:
            world = await observe_provisioners(engine)
            if world is None or world.staged is None:
                return Plan.build(inventory=engine.topology.source, waves=[])
        if check:
            return await compute_rotation(engine)
        plan, _ = await apply_rotation(engine, None, ApplyOptions(force=force,
                                                                    lock_wait=lock_wait))
        return plan

    return outcome(asyncio.run(run()))


@dataclass(frozen=True)
class DnsOutcome:
    """What the ``dns_records`` module reports about the zone."""

    plan: Plan
    zone: str
    provider: str
    applied: list[str]
    verified: str = ""
    """What the verify step found, or why it did not run; empty when nothing was applied."""

    def module_result(self, *, check: bool, want_diff: bool) -> dict[str, Any]:
        effective = self.plan.effective_changes
        result: dict[str, Any] = {
            "changed": bool(effective) if check else bool(self.applied),
            "zone": self.zone,
            "provider": self.provider,
            "changes": [{"id": c.id, "action": c.action.value, "target": c.target,
                         "reason": c.reason} for c in effective],
            "kept": [{"target": c.target, "reason": c.reason}
                     for c in self.plan.changes if c.action is Action.KEEP],
            "applied": list(self.applied),
            "verified": self.verified,
            "notes": list(self.plan.notes),
        }
        if want_diff:
            shown = effective if check else [c for c in effective if c.id in self.applied]
            result["diff"] = [
                {"before_header": f"{c.target} (observed)", "after_header": f"{c.target} (planned)",
                 "before": _zone_lines(c.snapshot()), "after": _zone_lines(c.written())}
                for c in shown
            ]
        return result


def _zone_lines(snapshot: dict[str, Any] | None) -> str:
    if not snapshot:
        return ""
    name, rtype, ttl = snapshot["name"], snapshot["type"], snapshot["ttl"]
    return "".join(f"{name}. {ttl} {rtype} {content}\n" for content in snapshot["records"])


def converge_dns(
    inventory: Path, *, check: bool, force: bool = False, lock_wait: float = 120.0,
    verify_timeout: float | None = DEFAULT_VERIFY_TIMEOUT,
) -> DnsOutcome:
    """The zone's records planned (*check*) or applied through the runner (lock, journal,
    then the verify step unless *verify_timeout* is ``None``)."""
    engine = Engine(load_topology(inventory))
    verified: list[str] = []

    def progress(site: str, phase: str, text: str) -> None:
        if phase == "gate-ok":  # a zone-only plan has one gate: the verify step
            verified.append(text)

    async def run() -> tuple[Plan, list[str]]:
        if check:
            plan = await compute_dns_plan(engine)
            plan.raise_if_unsafe(force=force)
            return plan, []
        options = ApplyOptions(force=force, lock_wait=lock_wait,
                               dns_verify_timeout=verify_timeout, progress=progress)
        plan, report = await apply_dns(engine, options)
        return plan, list(report.done)

    plan, applied = asyncio.run(run())
    if applied and verify_timeout is None:
        verified.append("answers not verified: verify is false")
    dns = engine.topology.dns
    return DnsOutcome(plan=plan, zone=dns.zone, provider=dns.provider, applied=applied,
                      verified=verified[-1] if verified else "")
