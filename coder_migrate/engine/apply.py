"""Apply: the one runner every operation goes through (deploy, a migration, its rollback,
DNS), from the CLI and from the Ansible modules alike.

1. Observe once: the plan is computed (``compute``), after noting the journal's version.
2. A reviewed plan (a plan file, or the preview the user confirmed) must equal it: otherwise
   it is stale and refused, and nothing has been touched.
3. The lock. Under it, the journal's version is read again: unchanged, no other apply ran
   since step 1 and the plan holds as computed; changed, the plan is computed again and must
   still match (apart from the state namespace the lock itself creates).
4. Wave by wave: per change, journal ``started`` -> act -> journal ``done`` (or ``failed``);
   regions of a wave run concurrently, the changes of one region in plan order. The lock is
   checked at every change boundary: a lost lock stops the apply there (:class:`LockLost`).
   Each wave closes with the gates its changes ask for (:meth:`Change.verify`): the sites'
   health, and for the DNS wave of a deploy the verify step (:mod:`coder_migrate.dns.verify`).
   A site's own gate (asked for only by that site's changes) starts as soon as the site's
   changes of the wave are done, while other regions' changes still run; a gate about the
   whole wave (the DNS verify step) starts after the wave's last change. The wave is closed
   when every change is done and every gate met.

The first failure stops its wave: the other regions' changes of the wave finish, gates still
running are cancelled (a failed change is raised first, before any gate's), and nothing of a
later wave starts.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

from coder_migrate.dns.verify import DEFAULT_VERIFY_TIMEOUT
from coder_migrate.engine.change import ApplyContext, Change, Gate, Progress, change_id
from coder_migrate.engine.journal import Journal, Phase, Written
from coder_migrate.engine.lock import ApplyLock
from coder_migrate.engine.plan import Plan, Wave
from coder_migrate.engine.world import CONCURRENCY, Engine
from coder_migrate.errors import ApplyError, CoderMigrateError, LockLost, PlanError, redact
from coder_migrate.poll import attempts
from coder_migrate.tasks import run_all

__all__ = [
    "ApplyOptions",
    "ApplyReport",
    "Progress",
    "apply_operation",
    "run_plan",
]

Compute = Callable[[], Awaitable[Plan]]

GATE_TIMEOUT = 120.0
GATE_POLL = 1.0
#: A site usually passes its gate within a second of its last change: the first re-check
#: comes this soon, the next ones twice as late each, up to GATE_POLL.
GATE_POLL_FIRST = 0.25


@dataclass(frozen=True)
class ApplyOptions:
    force: bool = False
    gate_timeout: float = GATE_TIMEOUT
    lock_wait: float = 0.0
    """Seconds to wait for a lock someone else holds (the Ansible roles wait; the CLI not)."""
    dns_verify_timeout: float | None = DEFAULT_VERIFY_TIMEOUT
    """Seconds the DNS wave's verify step waits for every region's answers to be as planned;
    ``None``: no verify step."""
    progress: Progress | None = None


@dataclass
class ApplyReport:
    run: str
    done: list[str] = field(default_factory=list)


def _noop(region: str, phase: str, text: str) -> None:
    return None


def _run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


async def apply_operation(
    engine: Engine, operation: str, compute: Compute, options: ApplyOptions,
    reviewed: Plan | None = None, *, source: str = "plan file",
) -> tuple[Plan, ApplyReport]:
    """Compute the plan of *operation* once, refuse a stale *reviewed* one, apply it under
    the lock (see the module's docstring). Returns the plan applied and what was done."""
    journal = Journal(engine.primary_kube, engine.state_namespace)
    seen = await journal.version()
    plan = await compute()
    state_namespace = change_id(engine.topology.primary.name, "Namespace", engine.state_namespace)
    if reviewed is not None:
        reviewed.ensure_matches(plan, source=source)
    plan.raise_if_unsafe(force=options.force)
    if plan.is_empty:
        return plan, ApplyReport(run="")
    async with ApplyLock(engine.primary_kube, engine.state_namespace, operation,
                         wait=options.lock_wait) as lock:
        if await journal.version() != seen:
            fresh = await compute()
            fresh.raise_if_unsafe(force=options.force)
            if reviewed is not None and fresh.without({state_namespace}).checksum != (
                    plan.without({state_namespace}).checksum):
                raise PlanError(
                    "the world changed between plan and lock (another operator?): "
                    f"{plan.difference(fresh)}; plan again"
                )
            plan = fresh
        report = await run_plan(engine, plan, journal, lock, options)
    return plan, report


async def run_plan(
    engine: Engine, plan: Plan, journal: Journal, lock: ApplyLock, options: ApplyOptions
) -> ApplyReport:
    """Carry out *plan* wave by wave under *lock*; each wave closed by its gates."""
    report = ApplyReport(run=_run_id())
    progress = options.progress or _noop
    ctx = ApplyContext(
        engine=engine, run=report.run, gate_timeout=options.gate_timeout,
        operation=plan.operation, dns_verify_timeout=options.dns_verify_timeout,
        progress=progress,
    )
    runner = _Runner(ctx, plan, journal, lock, report, progress)
    for index, wave in enumerate(plan.waves):
        try:
            await runner.run_wave(wave)
        except CoderMigrateError as error:
            not_done = [c.id for w in plan.waves[index:] for c in w.effective
                        if c.id not in report.done]
            stop = LockLost if isinstance(error, LockLost) else ApplyError
            raise stop(
                f"wave {wave.name!r} stopped: {redact(str(error))}",
                done=list(report.done), not_done=not_done,
            ) from None
    return report


class _Runner:
    def __init__(
        self, ctx: ApplyContext, plan: Plan, journal: Journal, lock: ApplyLock,
        report: ApplyReport, progress: Progress,
    ) -> None:
        self.ctx = ctx
        self.plan = plan
        self.journal = journal
        self.lock = lock
        self.report = report
        self.progress = progress
        self.lanes = asyncio.Semaphore(CONCURRENCY)

    async def run_wave(self, wave: Wave) -> None:
        """The wave's changes, region by region at once, and its gates (module docstring)."""
        ctx = replace(self.ctx, wave_regions=frozenset(c.region for c in wave.effective))
        by_region: dict[str, list[Change]] = defaultdict(list)
        for change in wave.effective:
            by_region[change.region].append(change)
        own, closing = _wave_gates(wave, ctx)
        started: list[asyncio.Task[None]] = []

        async def region(name: str, changes: Sequence[Change]) -> None:
            await self._run_region(changes)
            # Its changes done: its health no longer waits for the slowest region's.
            started.extend(asyncio.create_task(self._wait(gate)) for gate in own.get(name, ()))

        try:
            # Every region runs to its next change boundary; the first failure is raised after.
            results = await asyncio.gather(
                *(region(name, changes) for name, changes in by_region.items()),
                return_exceptions=True,
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise failures[0]
            await run_all([*(partial(_join, task) for task in started),
                           *(partial(self._wait, gate) for gate in closing)])
        finally:
            # A failure (or this apply cancelled): the gates still polling are not waited for.
            for task in started:
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)

    async def _run_region(self, changes: Sequence[Change]) -> None:
        async with self.lanes:
            for change in changes:
                self.lock.check()
                await self._run_change(change)

    async def _run_change(self, change: Change) -> None:
        written = Written(state=change.written()) if change.JOURNAL_WRITTEN else None

        async def journal(phase: Phase, detail: str) -> None:
            await self.journal.record(
                run=self.report.run, operation=self.plan.operation, change_id=change.id,
                region=change.region, by=self.lock.identity, phase=phase, detail=detail,
                snapshot=change.snapshot(), written=written,
            )

        await journal("started", change.describe())
        self.progress(change.region, "started", change.describe())
        try:
            detail = await change.act(self.ctx)
        except CoderMigrateError as error:
            message = redact(str(error))
            await journal("failed", message)
            self.progress(change.region, "failed", f"{change.target}: {message}")
            raise
        await journal("done", detail or change.describe())
        self.report.done.append(change.id)
        self.progress(change.region, "done", detail or change.describe())

    async def _wait(self, gate: Gate) -> None:
        if gate.waits:
            problem = await gate.check()
            if problem:
                raise ApplyError(problem)
            return
        timeout = self.ctx.gate_timeout
        self.progress(gate.site, "gate", "waiting for the health gate")
        problem = "not checked"
        async for attempt in attempts(timeout, interval=GATE_POLL, first=GATE_POLL_FIRST):
            problem = await gate.check()
            if not problem or attempt.last:
                break
        if problem:
            raise ApplyError(f"{gate.site}: health gate not met within {timeout:.0f} s: {problem}")
        self.progress(gate.site, "gate-ok", "healthy")


def _wave_gates(wave: Wave, ctx: ApplyContext) -> tuple[dict[str, list[Gate]], list[Gate]]:
    """The gates WAVE's changes ask for (one per key): per site, those only that site's own
    changes ask for, which may start once they are done; and the rest, which close the wave.
    ``verify`` only names a gate (it checks nothing), so it is asked before the changes run."""
    gates: dict[str, Gate] = {}
    askers: dict[str, set[str]] = defaultdict(set)
    for change in wave.effective:
        gate = change.verify(ctx)
        if gate is not None:
            gates.setdefault(gate.key, gate)
            askers[gate.key].add(change.region)
    own: dict[str, list[Gate]] = defaultdict(list)
    closing: list[Gate] = []
    for key, gate in gates.items():
        if not gate.waits and askers[key] == {gate.site}:
            own[gate.site].append(gate)
        else:
            closing.append(gate)
    return own, closing


async def _join(task: asyncio.Task[None]) -> None:
    await task
