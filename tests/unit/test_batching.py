"""Group commit (``coder_migrate.batching``), the journal's writes and the zone's writes:
regions writing at once share writes instead of queueing one write each, and each still
returns only once its own item is written or failed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coder_migrate.batching import GroupCommit
from coder_migrate.dns.rrset_change import DnsRRSetChange, _write_together
from coder_migrate.engine.change import Action
from coder_migrate.engine.journal import Journal
from coder_migrate.errors import DnsError
from coder_migrate.providers.dns.base import RRSet, RRSetChange
from tests.fakes import FakeCluster


def test_items_submitted_during_a_write_share_the_next_write_in_order() -> None:
    batches: list[list[int]] = []

    async def flush(batch: list[int]) -> list[int]:
        batches.append(batch)
        await asyncio.sleep(0.01)
        return [item * 10 for item in batch]

    async def scenario() -> list[int]:
        writes: GroupCommit[int, int] = GroupCommit(flush)
        first = asyncio.create_task(writes.submit(0))
        await asyncio.sleep(0)  # the first write is under way
        rest = [asyncio.create_task(writes.submit(n)) for n in range(1, 30)]
        return await asyncio.gather(first, *rest)

    assert asyncio.run(scenario()) == [n * 10 for n in range(30)]
    assert batches == [[0], list(range(1, 30))]


def test_an_item_fails_alone_and_a_failed_write_fails_only_its_batch() -> None:
    calls = 0

    async def flush(batch: list[str]) -> list[str | Exception]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("connection refused")
        return [ValueError(item) if item == "bad" else item for item in batch]

    async def scenario() -> list[Any]:
        writes: GroupCommit[str, str] = GroupCommit(flush)
        first = await asyncio.gather(writes.submit("a"), writes.submit("bad"),
                                     return_exceptions=True)
        second = await asyncio.gather(writes.submit("b"), writes.submit("c"),
                                      return_exceptions=True)
        third = await writes.submit("d")
        return [*first, *second, third]

    a, bad, b, c, d = asyncio.run(scenario())
    assert a == "a" and isinstance(bad, ValueError)
    assert isinstance(b, OSError) and isinstance(c, OSError)
    assert d == "d"


def test_a_caller_cancelled_while_waiting_leaves_its_batch_alone() -> None:
    written: list[str] = []

    async def flush(batch: list[str]) -> list[None]:
        await asyncio.sleep(0.02)
        written.extend(batch)
        return [None] * len(batch)

    async def scenario() -> None:
        writes: GroupCommit[str, None] = GroupCommit(flush)
        waiting = asyncio.create_task(writes.submit("cancelled"))
        other = asyncio.create_task(writes.submit("other"))
        await asyncio.sleep(0.005)
        waiting.cancel()
        await other
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())
    assert written == ["cancelled", "other"]


def test_concurrent_journal_entries_share_configmap_writes_and_keep_their_order() -> None:
    """50 regions journalling at once: every entry kept, in the order written, in far
    fewer ConfigMap writes than entries (was one read and one write per entry)."""
    cluster = FakeCluster()
    journal = Journal(cluster, "ns")  # type: ignore[arg-type]

    async def scenario() -> list[str]:
        await asyncio.gather(*(
            journal.record(run="r", operation="migrate", change_id=f"r{n:02d}/X/a",
                           region=f"r{n:02d}", phase="started", by="me")
            for n in range(50)))
        return [entry.change_id for entry in await journal.entries()]

    assert asyncio.run(scenario()) == [f"r{n:02d}/X/a" for n in range(50)]
    writes = [call for call in cluster.calls if call.startswith("write configmap")]
    assert 1 <= len(writes) <= 2


class _Zone:
    """A zone behind a DNS API: counts observations and writes."""

    def __init__(self, rrsets: list[RRSet]) -> None:
        self.rrsets = {r.key: r for r in rrsets}
        self.observed = 0
        self.writes: list[list[RRSetChange]] = []

    async def observe(self) -> list[RRSet]:
        self.observed += 1
        return list(self.rrsets.values())

    async def apply(self, changes: list[RRSetChange]) -> None:
        self.writes.append(list(changes))
        for change in changes:
            if change.after is None:
                del self.rrsets[change.key]
            else:
                self.rrsets[change.key] = change.after


def _a(name: str, address: str) -> RRSet:
    return RRSet(name=f"{name}.coder.example.com", type="A", ttl=60, records=(address,))


def _create(rrset: RRSet, before: RRSet | None = None) -> DnsRRSetChange:
    return DnsRRSetChange(id=f"{rrset.name}/A", region=rrset.name.split(".")[0],
                          action=Action.CREATE if before is None else Action.UPDATE,
                          target=f"A {rrset.name}", reason="test", before=before, after=rrset)


def test_a_batch_of_rrsets_is_one_observation_and_one_write() -> None:
    """What each region's change gets: written, already there (a resumed apply), or its own
    "changed since the plan" error, while the others of the batch are written."""
    taken = _a("r03", "192.0.2.99")  # someone else's record where r03's plan saw none
    there = _a("r04", "127.0.50.4")
    zone = _Zone([taken, there])
    changes = [_create(_a(f"r{n:02d}", f"127.0.50.{n}")) for n in range(5)]

    outcomes = asyncio.run(_write_together(zone, changes))  # type: ignore[arg-type]

    assert outcomes[:3] == [True, True, True]
    assert isinstance(outcomes[3], DnsError) and "changed since the plan" in str(outcomes[3])
    assert outcomes[4] is False
    assert zone.observed == 1 and len(zone.writes) == 1
    assert [c.key for c in zone.writes[0]] == [changes[n].after.key for n in range(3)]  # type: ignore[union-attr]
    assert zone.rrsets[taken.key] == taken


def test_a_second_change_of_one_rrset_goes_in_a_write_after_the_first() -> None:
    first, second = _a("r01", "127.0.50.1"), _a("r01", "127.0.50.2")
    zone = _Zone([])
    outcomes = asyncio.run(_write_together(  # type: ignore[arg-type]
        zone, [_create(first), _create(second, before=first)]))
    assert outcomes == [True, True]
    assert [[c.after for c in write] for write in zone.writes] == [[first], [second]]
    assert zone.rrsets[first.key] == second
