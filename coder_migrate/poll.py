"""The one way coder-migrate waits for something: attempts spaced by an interval, up to a deadline.

Every wait (a health gate, a satellite's key, a workspace build, DNS answers, another
operator's lock) is "try, and if it is not there yet and time is left, pause and try again".
:func:`attempts` yields until the deadline has passed; each :class:`Attempt` says whether it is
the last one, so the caller decides what giving up means (return the last problem, raise).
There is always at least one attempt, however short the timeout.

    async for attempt in attempts(timeout, interval=1.0):
        problem = await check()
        if not problem or attempt.last:
            return problem

A wait for something that is usually there within a second (a satellite just started, a
site just changed) passes ``first``: the pauses start that short and double up to
``interval``, so it is seen soon after it appears without asking often for long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = ["Attempt", "attempts"]


@dataclass(frozen=True)
class Attempt:
    number: int
    """1 for the first attempt."""
    last: bool
    """No further attempt follows: the deadline passes before the next one would start."""
    elapsed: float
    """Seconds since the first attempt started."""


async def attempts(
    timeout: float, *, interval: float = 1.0, first: float | None = None
) -> AsyncIterator[Attempt]:
    """Attempts until *timeout* seconds have passed, *interval* seconds apart (with *first*:
    the first pause is *first* seconds, each next one twice the last, up to *interval*).

    An attempt is the last when the next one would start after the deadline. The pause
    between attempts is taken only when the caller asks for another (it loops again).
    """
    started = time.monotonic()
    deadline = started + timeout
    pause = interval if first is None else min(first, interval)
    number = 0
    while True:
        number += 1
        now = time.monotonic()
        last = now + pause > deadline
        yield Attempt(number=number, last=last, elapsed=now - started)
        if last:
            return
        await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        pause = min(interval, pause * 2)
