"""The one apply runner without a cluster: waves, journal, gates, the lock (a lost Lease
mid-apply included), observing once, and stale plans refused before anything is touched.

The cluster is :class:`tests.fakes.FakeCluster` (ConfigMaps and a Lease with optimistic
concurrency); the changes are a small kind defined here. The integration tests run the same
runner against the lab's kube-apiserver."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import pytest

from coder_migrate import sensitive
from coder_migrate.engine import lock as lock_module
from coder_migrate.engine.apply import ApplyOptions, apply_operation
from coder_migrate.engine.change import (
    Action,
    ApplyContext,
    Change,
    Done,
    Gate,
    Irreversible,
    UndoContext,
)
from coder_migrate.engine.guide import Guide
from coder_migrate.engine.journal import Journal
from coder_migrate.engine.lock import LEASE_NAME, ApplyLock
from coder_migrate.engine.plan import Plan, Wave
from coder_migrate.errors import ApplyError, LockHeld, LockLost, PlanError, StalePlan
from coder_migrate.inventory import Topology, load_topology
from coder_migrate.poll import attempts
from tests.fakes import FakeCluster, FakeEngine
from tests.helpers import EXAMPLE_INVENTORY

ACTS: dict[str, Callable[[], Awaitable[str]]] = {}
"""What each test step does when it acts, by change id."""
GATES: dict[str, Callable[[], Awaitable[str]]] = {}
LOG: list[str] = []


class StepChange(Change):
    kind: Literal["TestStep"] = "TestStep"

    async def act(self, ctx: ApplyContext) -> str:
        LOG.append(f"act {self.id}")
        behaviour = ACTS.get(self.id)
        return await behaviour() if behaviour else f"{self.id} done"

    def verify(self, ctx: ApplyContext) -> Gate | None:
        check = GATES.get(self.region)
        return Gate(key=f"test/{self.region}", site=self.region, check=check) if check else None

    @classmethod
    async def inverse(cls, done: Done, ctx: UndoContext) -> Irreversible:
        return Irreversible("a test step")

    @classmethod
    def guide(cls) -> Guide:
        return Guide(title="A test step", rollback="nothing")


@pytest.fixture(autouse=True)
def _clean() -> None:
    ACTS.clear()
    GATES.clear()
    LOG.clear()


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(EXAMPLE_INVENTORY)


def step(region: str, name: str) -> StepChange:
    return StepChange(id=f"{region}/TestStep/{name}", region=region, action=Action.ACT,
                    target=f"step {name}", reason="test")


def plan_of(*waves: tuple[str, list[StepChange]]) -> Plan:
    return Plan.build(inventory="inv", operation="test",
                      waves=[Wave(name=n, regions=tuple(dict.fromkeys(c.region for c in cs)),
                                  changes=tuple(cs)) for n, cs in waves])


def run(engine: FakeEngine, compute: Callable[[], Awaitable[Plan]], *,
        reviewed: Plan | None = None, gate_timeout: float = 5.0) -> tuple[Plan, list[str]]:
    options = ApplyOptions(gate_timeout=gate_timeout)
    plan, report = asyncio.run(apply_operation(
        engine, "test", compute, options, reviewed))  # type: ignore[arg-type]
    return plan, report.done


def journal_of(engine: FakeEngine) -> list[tuple[str, str]]:
    journal = Journal(engine.primary_kube, engine.state_namespace)  # type: ignore[arg-type]
    return [(e.change_id, e.phase) for e in asyncio.run(journal.entries())]


def test_waves_run_in_order_journalled_and_closed_by_their_gates(topology: Topology) -> None:
    engine = FakeEngine(topology)
    checked: list[str] = []

    async def healthy() -> str:
        checked.append("us-east")
        return ""

    GATES["us-east"] = healthy
    plan = plan_of(("canary", [step("us-east", "a"), step("us-east", "b")]),
                   ("regions", [step("eu-west", "c")]))
    computed = []

    async def compute() -> Plan:
        computed.append(1)
        return plan

    applied, done = run(engine, compute)
    assert applied == plan and len(computed) == 1, "observed once"
    assert done == ["us-east/TestStep/a", "us-east/TestStep/b", "eu-west/TestStep/c"]
    assert checked == ["us-east"], "one gate per key, after its wave"
    assert journal_of(engine) == [
        ("us-east/TestStep/a", "started"), ("us-east/TestStep/a", "done"),
        ("us-east/TestStep/b", "started"), ("us-east/TestStep/b", "done"),
        ("eu-west/TestStep/c", "started"), ("eu-west/TestStep/c", "done"),
    ]
    assert engine.primary_kube.leases == {}, "the lock is released"


def test_a_failed_change_is_journalled_and_stops_before_the_next_wave(
    topology: Topology,
) -> None:
    engine = FakeEngine(topology)

    async def fails() -> str:
        raise ApplyError("the satellite would not start")

    ACTS["us-east/TestStep/a"] = fails
    plan = plan_of(("canary", [step("us-east", "a"), step("us-east", "b")]),
                   ("regions", [step("eu-west", "c")]))
    with pytest.raises(ApplyError) as stopped:
        run(engine, lambda: asyncio.sleep(0, plan))
    assert "wave 'canary' stopped: the satellite would not start" in str(stopped.value)
    assert stopped.value.not_done == [c.id for c in plan.effective_changes]
    assert journal_of(engine) == [("us-east/TestStep/a", "started"),
                                  ("us-east/TestStep/a", "failed")]


def test_an_unmet_gate_stops_the_apply_with_its_problem(topology: Topology) -> None:
    engine = FakeEngine(topology)

    async def unhealthy() -> str:
        return "pods not ready: coder-0"

    GATES["us-east"] = unhealthy
    plan = plan_of(("canary", [step("us-east", "a")]), ("regions", [step("eu-west", "c")]))
    with pytest.raises(ApplyError, match=r"us-east: health gate not met within 1 s: pods not"):
        run(engine, lambda: asyncio.sleep(0, plan), gate_timeout=1.0)
    assert LOG == ["act us-east/TestStep/a"], "nothing of the next wave started"


def test_a_sites_gate_starts_when_its_own_changes_are_done_not_after_the_slowest_region(
    topology: Topology,
) -> None:
    """us-east's gate is met while eu-west's change still runs; the wave still closes only
    when eu-west's change and gate are done too, and the next wave starts after that."""
    engine = FakeEngine(topology)

    async def slow() -> str:
        for _ in range(200):  # until us-east's gate has been met, at most 2 s
            if "gate us-east" in LOG:
                break
            await asyncio.sleep(0.01)
        LOG.append("eu-west's change ends")
        return "slow done"

    def gate_of(region: str) -> Callable[[], Awaitable[str]]:
        async def met() -> str:
            LOG.append(f"gate {region}")
            return ""
        return met

    ACTS["eu-west/TestStep/c"] = slow
    GATES["us-east"] = gate_of("us-east")
    GATES["eu-west"] = gate_of("eu-west")
    plan = plan_of(("regions", [step("us-east", "a"), step("eu-west", "c")]),
                   ("last", [step("us-west", "d")]))
    run(engine, lambda: asyncio.sleep(0, plan))
    assert LOG.index("gate us-east") < LOG.index("eu-west's change ends")
    assert LOG.index("eu-west's change ends") < LOG.index("gate eu-west")
    assert LOG.index("gate eu-west") < LOG.index("act us-west/TestStep/d"), "wave closed first"


def test_a_failed_change_is_raised_before_a_gate_and_the_gates_still_polling_are_cancelled(
    topology: Topology,
) -> None:
    """us-east's gate polls (unhealthy) while eu-west's change fails: the wave stops with the
    change's failure as soon as the wave's changes are done, not after the gate's timeout;
    nothing of the next wave starts."""
    engine = FakeEngine(topology)
    polled: list[float] = []

    async def unhealthy() -> str:
        polled.append(asyncio.get_running_loop().time())
        return "pods not ready: coder-0"

    async def fails() -> str:
        for _ in range(200):  # until us-east's gate has polled, at most 2 s
            if polled:
                break
            await asyncio.sleep(0.01)
        raise ApplyError("the satellite would not start")

    GATES["us-east"] = unhealthy
    ACTS["eu-west/TestStep/c"] = fails
    plan = plan_of(("regions", [step("us-east", "a"), step("eu-west", "c")]),
                   ("last", [step("us-west", "d")]))
    started = time.monotonic()
    with pytest.raises(ApplyError, match="wave 'regions' stopped: the satellite would not"):
        run(engine, lambda: asyncio.sleep(0, plan), gate_timeout=60.0)
    assert time.monotonic() - started < 20, "the gate was cancelled, not waited to its timeout"
    assert polled, "us-east's gate ran while eu-west's change did"
    assert "act us-west/TestStep/d" not in LOG


def test_a_stale_reviewed_plan_is_refused_before_anything_is_touched(topology: Topology) -> None:
    engine = FakeEngine(topology)
    reviewed = plan_of(("canary", [step("us-east", "a")]))
    now = plan_of(("canary", [step("us-east", "a"), step("us-east", "b")]))
    with pytest.raises(StalePlan, match="is stale"):
        run(engine, lambda: asyncio.sleep(0, now), reviewed=reviewed)
    cluster = engine.primary_kube
    assert not cluster.namespaces and not cluster.leases and not cluster.maps
    assert LOG == []


def test_an_apply_in_between_makes_the_runner_plan_again_under_the_lock(
    topology: Topology,
) -> None:
    """Another operator's apply lands between our plan and our lock: our plan is computed
    again under the lock; a reviewed plan that no longer holds is refused."""
    engine = FakeEngine(topology)
    first = plan_of(("canary", [step("us-east", "a")]))
    second = plan_of(("canary", [step("us-east", "b")]))
    plans = iter([first, second, first, second])

    async def compute() -> Plan:
        plan = next(plans)
        journal = Journal(engine.primary_kube, engine.state_namespace)  # type: ignore[arg-type]
        await journal.record(run="other", operation="deploy", change_id="x/Y/z", region="x",
                             phase="done", by="someone-else")
        return plan

    applied, done = run(engine, compute)
    assert applied == second and done == ["us-east/TestStep/b"]
    with pytest.raises(PlanError, match="the world changed between plan and lock"):
        run(engine, compute, reviewed=first)


def test_a_lost_lease_stops_the_apply_at_the_next_change_boundary(
    topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine(topology)
    cluster = engine.primary_kube
    namespace = engine.state_namespace
    monkeypatch.setattr(lock_module.ApplyLock, "__init__", _fast_renewal(ApplyLock.__init__))

    async def taken_over() -> str:
        cluster.take_lease(namespace, LEASE_NAME, "operator-b@elsewhere:42")
        seen = len(cluster.calls)
        async for attempt in attempts(10.0, interval=0.01):
            if f"read lease {namespace}/{LEASE_NAME}" in cluster.calls[seen:] or attempt.last:
                break
        return "done while the lease was taken over"

    ACTS["us-east/TestStep/a"] = taken_over
    plan = plan_of(("canary", [step("us-east", "a"), step("us-east", "b")]),
                   ("regions", [step("eu-west", "c")]))
    with pytest.raises(LockLost) as lost:
        run(engine, lambda: asyncio.sleep(0, plan))
    assert lost.value.exit_code == 7
    assert "lock lost to operator-b@elsewhere:42" in str(lost.value)
    assert lost.value.done == ["us-east/TestStep/a"]
    assert lost.value.not_done == ["us-east/TestStep/b", "eu-west/TestStep/c"]
    # The journal is consistent: the change that acted is done, nothing else started.
    assert journal_of(engine) == [("us-east/TestStep/a", "started"),
                                  ("us-east/TestStep/a", "done")]
    assert cluster.leases[(namespace, LEASE_NAME)].holder == "operator-b@elsewhere:42", (
        "another holder's lease is never deleted")


def _fast_renewal(init: Callable[..., None]) -> Callable[..., None]:
    def fast(self: ApplyLock, *args: object, **kwargs: object) -> None:
        init(self, *args, **{**kwargs, "renew_every": 0.01})

    return fast


def test_the_lock_refuses_a_second_holder_and_waits_when_asked() -> None:
    cluster = FakeCluster()

    async def scenario() -> None:
        async with ApplyLock(cluster, "ns", "deploy", identity="first@a:1"):  # type: ignore[arg-type]
            with pytest.raises(LockHeld, match="held by first@a:1"):
                async with ApplyLock(cluster, "ns", "deploy",  # type: ignore[arg-type]
                                     identity="second@b:2"):
                    pass
        async with ApplyLock(cluster, "ns", "deploy", identity="second@b:2"):  # type: ignore[arg-type]
            assert cluster.leases[("ns", LEASE_NAME)].holder == "second@b:2"
        assert cluster.leases == {}

    asyncio.run(scenario())


@pytest.mark.parametrize(("event", "lost_to"), [
    ("deleted", "nobody (the Lease was deleted)"),
    ("unreachable", "nobody (not renewed before it expired)"),
])
def test_a_lease_deleted_or_not_renewable_until_expiry_is_lost(
    monkeypatch: pytest.MonkeyPatch, event: str, lost_to: str
) -> None:
    cluster = FakeCluster()
    monkeypatch.setattr(lock_module, "LEASE_SECONDS", 0.05)

    async def scenario() -> None:
        lock = ApplyLock(cluster, "ns", "deploy", identity="me@here:1",  # type: ignore[arg-type]
                         renew_every=0.01)
        async with lock:
            lock.check()
            if event == "deleted":
                cluster.leases.clear()
            else:
                cluster.unreachable = True
            async for attempt in attempts(10.0, interval=0.01):
                if lock.lost_to is not None or attempt.last:
                    break
            cluster.unreachable = False
            with pytest.raises(LockLost, match=re.escape(f"lock lost to {lost_to}")):
                lock.check()

    asyncio.run(scenario())


def test_journal_entries_keep_order_across_archives() -> None:
    cluster = FakeCluster()
    journal = Journal(cluster, "ns", max_bytes=2000)  # type: ignore[arg-type]

    async def scenario() -> None:
        for index in range(40):
            await journal.record(run="r", operation="deploy", change_id=f"x/Y/{index}",
                                 region="x", phase="done", by="me")
        history = await journal.history()
        assert [e.change_id for e in history] == [f"x/Y/{i}" for i in range(40)]
        assert len(await journal.entries()) < 40
        version = await journal.version()
        await journal.record(run="r", operation="deploy", change_id="x/Y/40", region="x",
                             phase="done", by="me")
        assert await journal.version() != version

    asyncio.run(scenario())




def test_the_journal_scrubs_registered_secrets_from_what_it_writes() -> None:
    """A secret the toolkit resolved (registered by value) never reaches the journal's
    ConfigMap, whether in a change's detail line or in its snapshot."""
    token = sensitive.register(f"journal-test-{secrets.token_hex(8)}")
    cluster = FakeCluster()
    journal = Journal(cluster, "ns")  # type: ignore[arg-type]

    async def scenario() -> list[str]:
        await journal.record(run="r", operation="deploy", change_id="eu-west/X/a",
                             region="eu-west", phase="failed", by="me",
                             detail=f"upstream said {token}", snapshot={"value": token})
        return [e.detail for e in await journal.entries()]

    details = asyncio.run(scenario())
    stored = "".join(data["entries.jsonl"] for data, _ in cluster.maps.values())
    assert token not in stored and "(sensitive)" in stored
    assert details == ["upstream said (sensitive)"]
