"""Every task the engine starts is awaited or cancelled: a failing fan-out raises its first
error once, and nothing is left behind to print "Task exception was never retrieved" or
"coroutine ... was never awaited" (issue 14: a failing kube context, 200 regions)."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from coder_migrate.engine.world import Engine
from coder_migrate.errors import KubeError
from coder_migrate.inventory import load_topology
from coder_migrate.poll import attempts
from coder_migrate.tasks import run_all
from tests.helpers import EXAMPLE_INVENTORY


def _leftovers(
    caplog: pytest.LogCaptureFixture, caught: list[warnings.WarningMessage]
) -> list[str]:
    gc.collect()
    logged = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    return logged + [str(w.message) for w in caught if "never awaited" in str(w.message)]


def test_the_first_failure_cancels_the_rest_and_is_raised_as_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancelled: list[int] = []

    async def slow(index: int) -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(index)
            raise
        return index

    async def fails() -> int:
        raise KubeError("lab-primary: read namespace: cluster unreachable (ConnectError)")

    calls = [fails, *(lambda i=i: slow(i) for i in range(50))]

    async def scenario() -> set[asyncio.Task[object]]:
        with pytest.raises(KubeError, match="cluster unreachable"):
            await run_all(calls, limit=16)
        return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert asyncio.run(scenario()) == set(), "nothing left running"
        assert _leftovers(caplog, caught) == []
    assert cancelled, "the calls that had started were cancelled"


def test_results_keep_the_order_of_the_calls() -> None:
    async def value(index: int) -> int:
        await asyncio.sleep(0.001 * (5 - index))
        return index

    assert asyncio.run(run_all([lambda i=i: value(i) for i in range(5)], limit=2)) == [
        0, 1, 2, 3, 4]


def test_observing_200_regions_on_a_failing_context_is_one_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setenv("CODER_SESSION_TOKEN", "not-used-here")
    topology = load_topology(EXAMPLE_INVENTORY)
    template = topology.regions[0]
    regions = tuple(template.model_copy(update={"name": f"r{i:03d}"}) for i in range(200))
    engine = Engine(topology.model_copy(update={"regions": regions}))
    caplog.set_level(logging.ERROR, logger="asyncio")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KubeError, match="kube context"):
            asyncio.run(engine.observe())
        assert _leftovers(caplog, caught) == []


def test_attempts_end_with_one_marked_last_and_always_try_once() -> None:
    async def count(timeout: float) -> list[bool]:
        return [attempt.last async for attempt in attempts(timeout, interval=0.01)]

    assert asyncio.run(count(0)) == [True]
    seen = asyncio.run(count(0.1))
    assert seen[-1] is True and not any(seen[:-1]) and len(seen) >= 2


def test_attempts_with_first_start_with_short_pauses_that_double_up_to_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A satellite that came up 0.3 s after the first try is seen within 0.4 s, not at the
    next whole interval; the pauses never exceed the interval."""
    clock = [100.0]
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(round(seconds, 6))
        clock[0] += seconds

    # Only poll's own view of the clock is played: the event loop keeps the real one.
    monkeypatch.setattr("coder_migrate.poll.time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr("coder_migrate.poll.asyncio", SimpleNamespace(sleep=sleep))

    async def run() -> list[float]:
        return [round(a.elapsed, 6) async for a in attempts(5.0, interval=1.0, first=0.1)]

    elapsed = asyncio.run(run())
    assert pauses[:6] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert elapsed[:4] == [0.0, 0.1, 0.3, 0.7]
    assert max(pauses) == 1.0 and elapsed[-1] <= 5.0
