"""Running coroutines side by side so that every task started is awaited or cancelled.

:func:`run_all` is the engine's one fan-out: calls (not coroutine objects, so nothing is
created that might never be awaited) run at most *limit* at once inside an
:class:`asyncio.TaskGroup`. The first failure cancels the others, waits for them, and is
raised as itself (not as an exception group), so callers catch the project's errors as
usual and no "Task exception was never retrieved" is ever printed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

__all__ = ["run_all"]

T = TypeVar("T")


async def run_all(
    calls: Iterable[Callable[[], Awaitable[T]]], *, limit: int | None = None
) -> list[T]:
    """The results of every call, in order; the first failure cancels the rest and is raised."""
    gate = asyncio.Semaphore(limit) if limit else None

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        if gate is None:
            return await call()
        async with gate:
            return await call()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(call)) for call in calls]
    except BaseExceptionGroup as errors:
        raise _first(errors) from None
    return [task.result() for task in tasks]


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of *group* that is not a cancellation, depth first."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group.exceptions[0]
