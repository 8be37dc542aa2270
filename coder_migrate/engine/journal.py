"""The journal: what apply did, kept in the primary cluster (a ConfigMap).

Every change is journalled before it acts (``started``) and after (``done`` or ``failed``),
with the operator's identity and, for changes that can be rolled back, a snapshot of what
was there before. A re-run after a crash reads it to resume; ``migrate status`` and
``rollback`` read it too. Entries hold no secrets: snapshots are taken from plan values,
which are already redacted, or from public state (DNS records, flags).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.errors import KubeError
from coder_migrate.providers.kube import KubeCluster

__all__ = ["JOURNAL_NAME", "Journal", "JournalEntry"]

JOURNAL_NAME = "coder-migrate-journal"
_KEY = "entries.jsonl"
_WRITE_ATTEMPTS = 8

Phase = Literal["started", "done", "failed", "rolled-back"]


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


class Journal:
    """Append-only entries in one ConfigMap, written with optimistic concurrency."""

    def __init__(self, cluster: KubeCluster, namespace: str, name: str = JOURNAL_NAME) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name

    async def entries(self) -> list[JournalEntry]:
        found = await self.cluster.read_config_map(self.namespace, self.name)
        if found is None:
            return []
        return [JournalEntry.model_validate_json(line) for line in _lines(found[0])]

    async def append(self, entries: Iterable[JournalEntry]) -> None:
        new = [entry.model_dump_json() for entry in entries]
        for _ in range(_WRITE_ATTEMPTS):
            found = await self.cluster.read_config_map(self.namespace, self.name)
            data, version = found if found is not None else ({}, None)
            text = "\n".join([*_lines(data), *new]) + "\n"
            if await self.cluster.write_config_map(
                self.namespace, self.name, {_KEY: text}, version
            ):
                return
        raise KubeError(
            f"{self.cluster.context}: journal {self.namespace}/{self.name} kept changing under "
            f"us; {len(new)} entr(ies) not written"
        )

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
    ) -> JournalEntry:
        entry = JournalEntry(
            run=run, operation=operation, change_id=change_id, region=region, phase=phase,
            at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), by=by, detail=detail,
            snapshot=snapshot,
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


def _lines(data: dict[str, str]) -> list[str]:
    return [line for line in data.get(_KEY, "").splitlines() if line.strip()]


