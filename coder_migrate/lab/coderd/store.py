"""The emulator's state: JSON documents in one SQLite file, so it survives restarts."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["Store"]

Doc = dict[str, Any]


class Store:
    """Documents by kind and id (``user``, ``workspace``, ``proxy``, ...), written through."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS objects ("
            "kind TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, "
            "seq INTEGER PRIMARY KEY AUTOINCREMENT, UNIQUE(kind, id))"
        )

    def close(self) -> None:
        self._db.close()

    def put(self, kind: str, doc: Doc) -> Doc:
        self._db.execute(
            "INSERT INTO objects(kind, id, data) VALUES (?, ?, ?) "
            "ON CONFLICT(kind, id) DO UPDATE SET data = excluded.data",
            (kind, str(doc["id"]), json.dumps(doc, sort_keys=True)),
        )
        return doc

    def get(self, kind: str, doc_id: str) -> Doc | None:
        row = self._db.execute(
            "SELECT data FROM objects WHERE kind = ? AND id = ?", (kind, doc_id)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def all(self, kind: str) -> list[Doc]:
        """Every document of a kind, in insertion order."""
        rows = self._db.execute(
            "SELECT data FROM objects WHERE kind = ? ORDER BY seq", (kind,)
        ).fetchall()
        return [dict(json.loads(row[0])) for row in rows]

    def find(self, kind: str, **fields: Any) -> Doc | None:
        return next(
            (d for d in self.all(kind) if all(d.get(k) == v for k, v in fields.items())), None
        )

    def delete(self, kind: str, doc_id: str) -> None:
        self._db.execute("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, doc_id))

    def meta(self, key: str) -> Any:
        doc = self.get("meta", key)
        return None if doc is None else doc["value"]

    def set_meta(self, key: str, value: Any) -> None:
        self.put("meta", {"id": key, "value": value})
