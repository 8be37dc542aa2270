"""Rollback: undo, region by region and in reverse, what the migration journalled.

The journal says what the migration did; each change's kind says how to undo it now
(:meth:`~coder_migrate.engine.change.Change.inverse`): DNS snapshots restored, Networking v2
switched off, the satellite deregistered and uninstalled. The old release was never touched.
Each step is journalled (operation ``v1.20-to-v1.21-rollback``), so a re-run resumes and a
finished rollback plans nothing. An rrset someone else changed after the migration wrote it
is refused (``--force`` restores it anyway).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from coder_migrate.engine.apply import ApplyOptions, ApplyReport, apply_operation
from coder_migrate.engine.change import Change, Done, Kinds, UndoContext
from coder_migrate.engine.journal import JournalEntry
from coder_migrate.engine.plan import Plan, Wave
from coder_migrate.engine.world import Engine
from coder_migrate.errors import ConfigError, PlanError
from coder_migrate.inventory import Topology
from coder_migrate.kinds import KINDS
from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION, ROLLBACK
from coder_migrate.migrations.v1_20_to_v1_21.observe import history

__all__ = ["compute_rollback_plan", "rollback_candidates", "rollback_migration"]


def rollback_candidates(entries: Sequence[JournalEntry]) -> list[Done]:
    """Changes the migration started since their last finished rollback, in journal order."""
    found: dict[str, Done] = {}
    for entry in entries:
        if entry.operation == ROLLBACK and entry.phase == "done":
            found.pop(entry.change_id, None)
        elif entry.operation == MIGRATION:
            done = found.get(entry.change_id)
            if done is None:
                kind = entry.change_id.split("/")[1] if entry.change_id.count("/") >= 2 else ""
                done = Done(entry.change_id, entry.region, kind, entry.snapshot)
                found[entry.change_id] = done
            if entry.written is not None and entry.written.state not in done.written:
                done.written.append(entry.written.state)
    return list(found.values())


def _check_regions(topology: Topology, limit: Sequence[str]) -> None:
    known = [r.name for r in topology.regions]
    for name in limit:
        if name not in known:
            raise ConfigError(f"--limit {name}: expected one of the inventory's regions "
                              f"({', '.join(known)})")


async def _undo_all(dones: Sequence[Done], ctx: UndoContext, kinds: Kinds) -> list[Change]:
    """The inverse of each of *dones* (newest first) that still has something to undo; the
    kinds undone first (DNS: clients leave a satellite before it goes) lead."""
    changes = []
    for done in reversed(dones):
        kind = kinds.of(done.kind)
        undo = await kind.inverse(done, ctx) if kind is not None else None
        if isinstance(undo, Change):
            changes.append(undo)
    return [c for c in changes if c.UNDO_FIRST] + [c for c in changes if not c.UNDO_FIRST]


async def compute_rollback_plan(
    engine: Engine, limit: Sequence[str] = (), *, force: bool = False, kinds: Kinds | None = None
) -> Plan:
    """What undoing the migration of the regions in *limit* (all when empty) still takes.

    What is there now says what is left to undo, so a re-run after a crash plans only the
    rest. The shared and primary DNS names are restored only when every region is rolled
    back. An rrset neither as the migration found it nor as it wrote it is refused
    (:class:`PlanError`, one line per rrset), or with *force* restored anyway.
    """
    kinds = kinds or KINDS
    topology = engine.topology
    _check_regions(topology, limit)
    primary = topology.primary.name
    wanted = set(limit) or {r.name for r in topology.regions}
    candidates = [
        d for d in rollback_candidates(await history(engine))
        if d.region in wanted or (d.region == primary and not limit)
    ]
    ctx = UndoContext(engine=engine, force=force)
    shared = await _undo_all([d for d in candidates if d.region == primary], ctx, kinds)
    order = list(dict.fromkeys(d.region for d in reversed(candidates) if d.region != primary))
    regional: list[Change] = []
    for name in order:
        regional += await _undo_all([d for d in candidates if d.region == name], ctx, kinds)
    if ctx.refused:
        raise PlanError(
            f"rollback refused: {len(ctx.refused)} DNS rrset(s) changed after the migration "
            "wrote them; nothing was changed:\n" + "\n".join(ctx.refused)
        )
    waves = [Wave(name="dns", regions=(primary,), changes=tuple(shared)),
             Wave(name="removals", regions=tuple(order), changes=tuple(regional))]
    return Plan.build(inventory=topology.source, waves=waves, limit=tuple(limit),
                      notes=ctx.notes, operation=ROLLBACK)


async def rollback_migration(
    engine: Engine, limit: Sequence[str], options: ApplyOptions, kinds: Kinds | None = None
) -> tuple[Plan, ApplyReport]:
    """Undo the migration of the regions in *limit* under the apply lock; resumable.

    ``options.force`` restores DNS rrsets someone else changed after the migration wrote
    them; the rollback's own removals never need it."""

    async def compute() -> Plan:
        return await compute_rollback_plan(engine, limit, force=options.force, kinds=kinds)

    return await apply_operation(engine, ROLLBACK, compute,
                                 dataclasses.replace(options, force=True))
