"""Group commit: callers that write while a write is under way share the next write.

The regions of a wave write to one place at once (the journal's ConfigMap, a DNS zone), and
each write there re-reads what it changes, so writing them one after another makes the
wave wait on a queue that grows with the number of regions. :class:`GroupCommit` keeps one
write in flight: items submitted meanwhile go together in the next one, in the order they
came. Each caller still returns only once its own item is written (or gets the write's
error), so write-ahead rules hold as with one write per item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """*flush* writes a batch and returns one result per item, or an exception for an item
    that failed on its own; an exception it raises fails every item of the batch."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R | Exception]]]) -> None:
        self._flush = flush
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        result: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, result))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending())
        # Shielded: a caller cancelled while waiting leaves the batch it joined alone.
        return await asyncio.shield(result)

    async def _write_pending(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    outcomes = await self._flush([item for item, _ in batch])
                except Exception as error:  # handed to every caller of the batch
                    outcomes = [error] * len(batch)
                for (_, result), outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, Exception):
                        result.set_exception(outcome)
                    else:
                        result.set_result(outcome)
                batch = []
        finally:
            self._writer = None
            for _, result in [*batch, *self._pending]:
                result.cancel()  # the loop is going away: no caller is left waiting forever
            self._pending = []
