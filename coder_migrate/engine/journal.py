"""The journal: what apply did, kept in the primary cluster (a ConfigMap).

Every change is journalled before it acts (``started``) and after (``done`` or ``failed``),
with the operator's identity and, for changes that can be rolled back, a snapshot of what
was there before. Changes whose rollback must not undo someone else's later edit (DNS
rrsets) also carry what they write (``written``). A re-run after a crash reads the journal
to resume; ``migrate status`` and ``rollback`` read it too. Entries hold no secrets:
snapshots are taken from plan values, which are already redacted, or from public state (DNS
records, flags), and every entry is scrubbed of the registered secrets
(:func:`coder_migrate.sensitive.scrub`) as it is written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.batching import GroupCommit
from coder_migrate.errors import KubeError
from coder_migrate.providers.kube import KubeCluster
from coder_migrate.sensitive import scrub

__all__ = ["JOURNAL_NAME", "Journal", "JournalEntry", "Written"]

JOURNAL_NAME = "coder-migrate-journal"
_KEY = "entries.jsonl"
_ARCHIVES = "archives"
_WRITE_ATTEMPTS = 8
MAX_BYTES = 512 * 1024
"""Entries kept in the main ConfigMap before the oldest half is archived (limit: 1 MiB)."""

Phase = Literal["started", "done", "failed", "rolled-back"]


class Written(BaseModel):
    """The state a change writes: its plan's ``after`` (``None`` when it deletes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state: dict[str, Any] | None


class JournalEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run: str
    operation: str
    change_id: str
    region: str
    phase: Phase
    at: str
    by: str
    detail: str = ""
    snapshot: dict[str, Any] | None = None
    written: Written | None = None
    """What the change writes, for kinds that journal it (``None``: not journalled)."""


class Journal:
    """Append-only entries in one ConfigMap, written with optimistic concurrency.

    A ConfigMap holds at most 1 MiB, so when the entries pass *max_bytes* the oldest half moves
    to an archive ConfigMap (``<name>-archive-<n>``) before the write: nothing is dropped, and
    :meth:`history` reads the archives back in order.
    """

    def __init__(
        self, cluster: KubeCluster, namespace: str, name: str = JOURNAL_NAME,
        *, max_bytes: int = MAX_BYTES,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.max_bytes = max_bytes
        # The regions of a wave write concurrently; in one process entries that come while a
        # write is under way go together in the next one (group commit), so the optimistic
        # retries are only for writers in other processes.
        self._writes: GroupCommit[list[str], None] = GroupCommit(self._write_batch)

    def archive_name(self, number: int) -> str:
        return f"{self.name}-archive-{number}"

    async def version(self) -> str | None:
        """The journal's resourceVersion (``None`` before the first entry): every apply that
        changes anything writes it, so an unchanged version means no apply ran in between."""
        found = await self.cluster.read_config_map(self.namespace, self.name)
        return None if found is None else found[1]

    async def entries(self) -> list[JournalEntry]:
        """The current entries (recent runs; see :meth:`history` for everything)."""
        found = await self.cluster.read_config_map(self.namespace, self.name)
        if found is None:
            return []
        return [JournalEntry.model_validate_json(line) for line in _lines(found[0])]

    async def history(self) -> list[JournalEntry]:
        """Every entry ever written, oldest first, archives included."""
        found = await self.cluster.read_config_map(self.namespace, self.name)
        if found is None:
            return []
        lines: list[str] = []
        for number in range(int(found[0].get(_ARCHIVES, "0"))):
            archived = await self.cluster.read_config_map(
                self.namespace, self.archive_name(number)
            )
            if archived is None:
                raise KubeError(
                    f"{self.cluster.context}: journal archive {self.namespace}/"
                    f"{self.archive_name(number)} is missing"
                )
            lines.extend(_lines(archived[0]))
        lines.extend(_lines(found[0]))
        return [JournalEntry.model_validate_json(line) for line in lines]

    async def append(self, entries: Iterable[JournalEntry]) -> None:
        """Returns once *entries* are in the ConfigMap."""
        await self._writes.submit([scrub(entry.model_dump_json()) for entry in entries])

    async def _write_batch(self, batch: list[list[str]]) -> list[None]:
        await self._append([line for lines in batch for line in lines])
        return [None] * len(batch)

    async def _append(self, new: list[str]) -> None:
        for attempt in range(_WRITE_ATTEMPTS):
            if attempt:
                await asyncio.sleep(random.uniform(0.05, 0.2) * attempt)  # noqa: S311
            found = await self.cluster.read_config_map(self.namespace, self.name)
            data, version = found if found is not None else ({}, None)
            lines = [*_lines(data), *new]
            archives = int(data.get(_ARCHIVES, "0"))
            if _size(lines) > self.max_bytes and len(lines) > 1:
                keep = _tail_within(lines, self.max_bytes // 2)
                await self._write_archive(archives, lines[: len(lines) - keep])
                lines = lines[len(lines) - keep:]
                archives += 1
            written = {_KEY: "\n".join(lines) + "\n", _ARCHIVES: str(archives)}
            if await self.cluster.write_config_map(self.namespace, self.name, written, version):
                return
        raise KubeError(
            f"{self.cluster.context}: journal {self.namespace}/{self.name} kept changing under "
            f"us; {len(new)} entr(ies) not written"
        )

    async def _write_archive(self, number: int, lines: list[str]) -> None:
        # An archive left by an attempt that lost the race for the main ConfigMap is
        # overwritten: the next attempt archives the same oldest entries again.
        name = self.archive_name(number)
        existing = await self.cluster.read_config_map(self.namespace, name)
        version = existing[1] if existing is not None else None
        if not await self.cluster.write_config_map(
            self.namespace, name, {_KEY: "\n".join(lines) + "\n"}, version
        ):
            raise KubeError(f"{self.cluster.context}: journal archive {name} changed under us")

    async def record(
        self,
        *,
        run: str,
        operation: str,
        change_id: str,
        region: str,
        phase: Phase,
        by: str,
        detail: str = "",
        snapshot: dict[str, Any] | None = None,
        written: Written | None = None,
    ) -> JournalEntry:
        entry = JournalEntry(
            run=run, operation=operation, change_id=change_id, region=region, phase=phase,
            at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), by=by, detail=detail,
            snapshot=snapshot, written=written,
        )
        await self.append([entry])
        return entry

    @staticmethod
    def latest(entries: Iterable[JournalEntry]) -> dict[str, JournalEntry]:
        """The newest entry of each change id."""
        newest: dict[str, JournalEntry] = {}
        for entry in entries:
            newest[entry.change_id] = entry
        return newest


def _size(lines: list[str]) -> int:
    return sum(len(line.encode()) + 1 for line in lines)


def _tail_within(lines: list[str], budget: int) -> int:
    """How many of the newest lines fit in *budget* bytes (at least one)."""
    total, count = 0, 0
    for line in reversed(lines):
        total += len(line.encode()) + 1
        if total > budget and count:
            break
        count += 1
    return count


def _lines(data: dict[str, str]) -> list[str]:
    return [line for line in data.get(_KEY, "").splitlines() if line.strip()]


