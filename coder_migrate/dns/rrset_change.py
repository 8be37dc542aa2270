"""``DnsRRSet``: one rrset of the zone created, updated or deleted, and how it is undone.

Applying re-observes the zone and checks that the rrset is still what the plan saw (one
already in place is skipped, so a resumed apply converges). The wave's gate is the verify
step (:mod:`coder_migrate.dns.verify`): once per wave, the authoritative answers from the
regions it changed must equal the plan. The journal keeps what was written: rollback
restores the ``before`` snapshot, and refuses an rrset someone changed after it was written
unless ``--force``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Literal

from coder_migrate.batching import GroupCommit
from coder_migrate.dns.verify import VERIFIED_OPERATIONS, raise_unless_verified
from coder_migrate.engine.change import (
    Action,
    ApplyContext,
    Change,
    Done,
    Gate,
    UndoContext,
)
from coder_migrate.engine.guide import Check, Commands, Guide
from coder_migrate.errors import DnsError
from coder_migrate.inventory import Region
from coder_migrate.providers.dns import open_adapter
from coder_migrate.providers.dns.base import DnsAdapter, RRSet, RRSetChange, RRSetKey

if TYPE_CHECKING:
    from coder_migrate.engine.world import Engine

__all__ = [
    "ANSWERS_GATE",
    "KIND",
    "DnsRRSetChange",
    "apply_dns_changes",
    "describe_records",
    "open_adapter",
    "restore_dns_changes",
]

KIND = "DnsRRSet"
ANSWERS_GATE = "dns/answers"
"""The key of the DNS wave's verify step: one gate per wave, whichever rrsets it changed."""


def describe_records(rrset: RRSet | None) -> str:
    """An rrset's TTL and records on one short line, for messages."""
    if rrset is None:
        return "nothing"
    text = " ".join(rrset.records)
    return f"ttl {rrset.ttl}: {text[:80]}{'...' if len(text) > 80 else ''}"


class DnsRRSetChange(Change):
    kind: Literal["DnsRRSet"] = "DnsRRSet"
    before: RRSet | None = None
    """The rrset as observed: the snapshot a rollback restores."""
    after: RRSet | None = None
    JOURNAL_WRITTEN = True
    UNDO_FIRST = True  # clients leave a satellite before it goes

    async def act(self, ctx: ApplyContext) -> str:
        acted = self.action is not Action.KEEP and await _zone_writes(ctx.engine).submit(self)
        return f"{self.target}: {'applied' if acted else 'already in place'}"

    def verify(self, ctx: ApplyContext) -> Gate | None:
        """The verify step, for operations whose DNS wave writes what the inventory asks for
        (deploy, the ``geodns`` role): a migration's ``DnsCheck`` step asks the answers
        itself, and a rollback restores older records."""
        if ctx.dns_verify_timeout is None or ctx.operation not in VERIFIED_OPERATIONS:
            return None
        return Gate(key=ANSWERS_GATE, site="dns", check=partial(_verify_answers, ctx),
                    waits=True)

    @classmethod
    async def inverse(cls, done: Done, ctx: UndoContext) -> Change | None:
        """Restore the snapshot; an rrset changed by someone else since it was written is
        refused (``ctx.refused``), or with ``--force`` restored anyway (``ctx.notes``)."""

        async def zone() -> dict[RRSetKey, RRSet]:
            async with open_adapter(ctx.engine.topology) as adapter:
                return {r.key: r for r in await adapter.observe()}

        current: dict[RRSetKey, RRSet] = await ctx.once("dns-zone", zone)
        before = RRSet.model_validate(done.snapshot) if done.snapshot else None
        have = current.get(before.key if before is not None else _key_of(done))
        if have == before:
            return None
        rrset = have or before
        assert rrset is not None
        reason = "restore the rrset as it was before the migration"
        written = [RRSet.model_validate(w) if w else None for w in done.written]
        if written and have not in written:
            changed = (f"{rrset.name} {rrset.type} was changed after the migration wrote "
                       f"it: now {describe_records(have)}, migration wrote "
                       f"{describe_records(written[-1])}")
            if not ctx.force:
                ctx.refused.append(f"{changed}; restore by hand or pass --force")
                return None
            ctx.notes.append(f"{changed}; restored to the snapshot anyway (--force)")
            reason += " (changed by someone else since; restored anyway: --force)"
        action = (Action.CREATE if have is None else
                  Action.DELETE if before is None else Action.UPDATE)
        return cls(id=done.change_id, region=done.region, action=action,
                   target=f"{rrset.type} {rrset.name}", reason=reason, before=have, after=before)

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Point the region's DNS records at the satellite", checks=_checks,
            estimate=lambda t: ("about 1 s for the DNS API calls; resolvers that cached the old "
                                f"answers see the new ones after the TTL ({t.dns.ttl} s)"),
            rollback="`migrate rollback` restores each rrset as the plan observed it before "
                     "the change (records that did not exist are deleted).",
            shared_title="Point the shared and primary names at the regions (GeoDNS)",
            shared_checks=shared_dns_checks,
        )


async def _verify_answers(ctx: ApplyContext) -> str:
    """Warm the health checks, then wait for the planned answers from the regions the wave
    changed; raises :class:`ApplyError` naming each region still wrong."""
    assert ctx.dns_verify_timeout is not None
    await raise_unless_verified(ctx.engine.topology, ctx.wave_regions,
                                timeout=ctx.dns_verify_timeout, progress=ctx.progress)
    return ""


def _key_of(done: Done) -> RRSetKey:
    rtype, _, name = done.name.partition("/")
    return name, rtype


def _checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    return [Check(c.cli("dns", "check", limit=region.name),
                  f"exit 0; every row for {region.name} ok (answers are the satellite's "
                  f"addresses: {', '.join(region.dns_targets) or 'none listed'})")]


def shared_dns_checks(c: Commands) -> list[Check]:
    """Checks of the shared names, which serve every region."""
    return [Check(c.cli("dns", "check"),
                  "exit 0; every row ok: each region's test clients get that region's "
                  "answers for the shared name")]


def _zone_writes(engine: Engine) -> GroupCommit[DnsRRSetChange, bool]:
    """The engine's zone writer: one write at a time (PowerDNS's SQLite backend refuses
    concurrent writes, and no DNS server gains from regions racing on one zone); the rrsets
    of regions that come meanwhile go together in the next write, one API call."""
    if engine.dns_writes is None:
        async def write(batch: list[DnsRRSetChange]) -> list[bool | Exception]:
            async with open_adapter(engine.topology) as adapter:
                return await _write_together(adapter, batch)

        engine.dns_writes = GroupCommit(write)
    return engine.dns_writes


def _needs_write(
    current: dict[RRSetKey, RRSet], expect: RRSet | None, target: RRSet | None
) -> bool:
    """Whether the zone still has to change from *expect* to *target*: ``False`` when it is
    already there (an earlier, interrupted run applied it); :class:`DnsError` when someone
    changed the rrset since the plan."""
    rrset = target or expect
    assert rrset is not None
    have = current.get(rrset.key)
    if have == target:
        return False
    if have != expect:
        raise DnsError(
            f"{rrset.describe()} changed since the plan was made "
            f"(expected {describe_records(expect)}, found {describe_records(have)}); plan again"
        )
    return True


async def _write_together(
    adapter: DnsAdapter, changes: Sequence[DnsRRSetChange]
) -> list[bool | Exception]:
    """One observation and one write for *changes* (whether each acted, or its own error);
    a second change of an rrset already in the write goes in a write of its own after it."""
    current = {r.key: r for r in await adapter.observe()}
    outcomes: list[bool | Exception] = []
    writes: dict[RRSetKey, RRSetChange] = {}
    for change in changes:
        write = RRSetChange(before=change.before, after=change.after)
        if write.key in writes:
            await adapter.apply(list(writes.values()))
            writes = {}
        try:
            needed = _needs_write(current, change.before, change.after)
        except DnsError as error:
            outcomes.append(error)
            continue
        if needed:
            writes[write.key] = write
            current.pop(write.key, None)
            if change.after is not None:
                current[write.key] = change.after
        outcomes.append(needed)
    if writes:
        await adapter.apply(list(writes.values()))
    return outcomes


async def _replay(
    adapter: DnsAdapter, steps: Sequence[tuple[Change, RRSet | None, RRSet | None]]
) -> list[str]:
    if not steps:
        return []
    current = {r.key: r for r in await adapter.observe()}
    done: list[str] = []
    for change, expect, target in steps:
        if _needs_write(current, expect, target):
            await adapter.apply([RRSetChange(before=expect, after=target)])
            done.append(change.id)
    return done


async def apply_dns_changes(adapter: DnsAdapter, changes: Iterable[Change]) -> list[str]:
    """Apply the ``DnsRRSet`` changes in order; return the ids of those that acted."""
    steps = [
        (c, c.before, c.after)
        for c in changes
        if isinstance(c, DnsRRSetChange) and c.action is not Action.KEEP
    ]
    return await _replay(adapter, steps)


async def restore_dns_changes(adapter: DnsAdapter, changes: Iterable[Change]) -> list[str]:
    """Put every changed rrset back to its ``before`` snapshot, in reverse order."""
    steps = [
        (c, c.after, c.before)
        for c in reversed(list(changes))
        if isinstance(c, DnsRRSetChange) and c.action is not Action.KEEP
    ]
    return await _replay(adapter, steps)
