"""``migrate status``: per region, the last finished step, when, by whom, and what is next.

"Next" comes from a plan computed now; when none can be (the primary does not answer), from
the journal and the order the steps are planned in (:data:`STEP_ORDER`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from coder_migrate.dns.rrset_change import DnsRRSetChange
from coder_migrate.engine.change import Change
from coder_migrate.engine.journal import JournalEntry
from coder_migrate.engine.kinds.namespace import NamespaceChange
from coder_migrate.engine.kinds.registration import SatelliteRegistrationChange
from coder_migrate.engine.kinds.release import HelmReleaseChange
from coder_migrate.engine.run import PlanScope
from coder_migrate.engine.world import Engine
from coder_migrate.errors import CoderMigrateError, redact
from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION, ROLLBACK
from coder_migrate.migrations.v1_20_to_v1_21.dns_check import DnsCheckChange
from coder_migrate.migrations.v1_20_to_v1_21.networking_v2 import ProviderNetworkingV2Change
from coder_migrate.migrations.v1_20_to_v1_21.observe import history
from coder_migrate.migrations.v1_20_to_v1_21.plan import compute_migration_plan
from coder_migrate.migrations.v1_20_to_v1_21.rebuild import WorkspaceRebuildChange
from coder_migrate.migrations.v1_20_to_v1_21.retain import RetainReleaseChange

__all__ = ["STEP_ORDER", "RegionStep", "migration_status", "next_from_journal"]

_STEPS: tuple[type[Change], ...] = (
    NamespaceChange, HelmReleaseChange, SatelliteRegistrationChange,
    ProviderNetworkingV2Change, WorkspaceRebuildChange, DnsRRSetChange, DnsCheckChange,
    RetainReleaseChange,
)
STEP_ORDER = tuple(step.KIND for step in _STEPS)
"""A region's migration steps in the order they are planned."""


@dataclass(frozen=True)
class RegionStep:
    """Where one region is in the migration."""

    region: str
    step: str
    """Kind of the last finished change, ``rolled back``, or ``not started``."""
    change_id: str = ""
    at: str = ""
    by: str = ""
    next: str = ""
    next_source: str = ""
    """``plan`` (computed now) or ``journal`` (the primary did not answer)."""

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def next_from_journal(last_kind: str) -> str:
    if last_kind not in STEP_ORDER:
        return STEP_ORDER[0]
    index = STEP_ORDER.index(last_kind)
    return STEP_ORDER[index + 1] if index + 1 < len(STEP_ORDER) else "nothing (migrated)"


def _kind_of(change_id: str) -> str:
    return change_id.split("/")[1]


async def _planned_next(engine: Engine) -> tuple[dict[str, str] | None, str]:
    """Per site, the first change a plan computed now holds; or why none could be made."""
    topology = engine.topology
    try:
        plan = await compute_migration_plan(engine, PlanScope(dns=True))
    except CoderMigrateError as error:
        return None, redact(str(error)).replace(":\n", ": ").replace("\n", "; ")
    planned: dict[str, str] = {}
    for change in plan.effective_changes:
        planned.setdefault(change.region, f"{change.kind}: {change.target}")
    shared = planned.get(topology.primary.name)
    if shared:
        for region in topology.regions:
            planned.setdefault(region.name, f"(shared DNS) {shared}")
    return planned, ""


def _where_is(region: str, entries: list[JournalEntry]) -> tuple[str, JournalEntry | None, str]:
    """The region's step, the entry that says so, and the kind it last finished."""
    mine = [e for e in entries if e.region == region]
    last_done = next((e for e in reversed(mine)
                      if e.operation == MIGRATION and e.phase == "done"), None)
    done_kind = _kind_of(last_done.change_id) if last_done else ""
    last = mine[-1] if mine else None
    if last is not None and last.operation == ROLLBACK:
        step = "rolled back" if last.phase == "done" else f"rollback {last.phase}"
        return step, last, done_kind
    if last_done is None:
        return "not started", None, done_kind
    if last is not None and last.phase != "done":
        return f"{done_kind} (then {_kind_of(last.change_id)} {last.phase})", last, done_kind
    return done_kind, last_done, done_kind


async def migration_status(engine: Engine) -> tuple[list[RegionStep], str]:
    """Per region: the last finished step, when, by whom, and what comes next.

    Returns the rows and, when the plan could not be computed, why (then *next* comes from
    the journal).
    """
    entries = await history(engine)
    planned, problem = await _planned_next(engine)
    rows = []
    for region in engine.topology.regions:
        step, entry, done_kind = _where_is(region.name, entries)
        if planned is not None:
            following, source = planned.get(region.name, "nothing (migrated)"), "plan"
        else:
            following, source = next_from_journal(done_kind), "journal"
        rows.append(RegionStep(
            region=region.name, step=step, change_id=entry.change_id if entry else "",
            at=entry.at if entry else "", by=entry.by if entry else "",
            next=following, next_source=source,
        ))
    return rows, problem
