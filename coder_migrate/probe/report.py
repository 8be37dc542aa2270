"""What the probe's synthetic users saw, as numbers: pure, no I/O, no clock.

The users (:mod:`coder_migrate.probe.users`) record a :class:`Sample` per request and a
:class:`Drop` per websocket that closed; the runner's progress events go to a
:class:`StepLog`. :func:`build_report` turns them into a :class:`ProbeReport` per region and
in total: how many requests failed (a websocket not reconnected within
:data:`RECONNECT_GRACE` seconds counts as one failure), the longest time without a successful
answer, p50/p99 latency before, during and after the operation, and the step each failure
fell in. Times are monotonic seconds; ``wall_offset`` turns them into wall-clock times.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

__all__ = [
    "PHASES",
    "RECONNECT_GRACE",
    "Drop",
    "FailureGroup",
    "PhaseLatency",
    "ProbeReport",
    "RegionReport",
    "Sample",
    "StepLog",
    "build_report",
    "percentile",
]

#: A dropped websocket reconnected within this many seconds is not a failure.
RECONNECT_GRACE = 1.0
PHASES = ("before", "during", "after")
_BEFORE_ANY_STEP = "before the first change"
_AFTER_OPERATION = "after the operation"


@dataclass(frozen=True)
class Sample:
    """One request of a synthetic user: when it was sent, how long it took, how it ended."""

    region: str
    sent: float
    seconds: float
    ok: bool
    route: str
    """``envproxy`` or ``satellite``: the address the request went to."""
    reason: str = ""
    """Why it failed (``HTTP 502``, ``ClientConnectorError``, ``no answer within 5 s``)."""

    @property
    def answered(self) -> float:
        return self.sent + self.seconds


@dataclass(frozen=True)
class Drop:
    """A websocket that closed (or could not be opened) and when it was open again."""

    region: str
    at: float
    reconnected: float | None
    """``None``: still not open when the probe stopped."""
    route: str
    reason: str

    def down_for(self, end: float) -> float:
        return (self.reconnected if self.reconnected is not None else end) - self.at

    def failed(self, end: float) -> bool:
        return self.reconnected is None or self.down_for(end) > RECONNECT_GRACE


@dataclass
class StepLog:
    """The operation's progress events, with the time each came; thread-safe enough for one
    writer (the runner) and a reader after it stopped (list appends are atomic)."""

    events: list[tuple[float, str, str, str]] = field(default_factory=list)
    first: float | None = None
    """When the first change started: the end of "before"."""
    finished: float | None = None
    """When the operation ended: the start of "after"."""

    def record(self, region: str, phase: str, text: str, at: float) -> None:
        if self.first is None and phase == "started":
            self.first = at
        self.events.append((at, region, phase, text))

    def finish(self, at: float) -> None:
        self.finished = at
        if self.first is None:
            self.first = at

    def phase_at(self, at: float) -> str:
        if self.first is None or at < self.first:
            return "before"
        if self.finished is not None and at >= self.finished:
            return "after"
        return "during"

    def step_at(self, region: str, at: float) -> str:
        """The step a failure of *region* at *at* fell in: the region's own change if one
        was running then, else the change started last anywhere (named with its region)."""
        if self.finished is not None and at >= self.finished:
            return _AFTER_OPERATION
        mine: str | None = None
        running = False
        latest: str | None = None
        for when, where, phase, text in self.events:
            if when > at:
                break
            if phase == "started":
                latest = f"{where}: {text}"
            if where == region and phase in ("started", "done", "failed"):
                running = phase == "started"
                mine = f"{region}: {text}" if running else mine
        if running and mine is not None:
            return mine
        return latest if latest is not None else _BEFORE_ANY_STEP


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` 0.5 for p50); ``None`` without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class PhaseLatency:
    count: int
    p50: float | None
    p99: float | None


@dataclass(frozen=True)
class FailureGroup:
    """Consecutive failures of one region with the same reason, route and step."""

    region: str
    channel: str
    """``request`` or ``websocket``."""
    reason: str
    route: str
    step: str
    count: int
    first: float
    last: float


@dataclass(frozen=True)
class RegionReport:
    region: str
    requests: int
    failed_requests: int
    websocket_drops: int
    failed_websockets: int
    longest_gap: float
    longest_ws_down: float
    latency: dict[str, PhaseLatency]
    routes: tuple[str, ...]

    @property
    def failed(self) -> int:
        return self.failed_requests + self.failed_websockets


@dataclass(frozen=True)
class ProbeReport:
    regions: tuple[RegionReport, ...]
    total: RegionReport
    failures: tuple[FailureGroup, ...]
    seconds: float
    wall_offset: float
    phased: bool
    """Whether an operation ran (before/during/after) or the probe ran alone."""

    @property
    def failed(self) -> int:
        return self.total.failed

    def lines(self) -> list[str]:
        """The report as printed: one line per region, one in total, then the failures."""
        lines = [f"probe: {len(self.regions)} synthetic user(s), a request every 200 ms and "
                 f"a websocket each, for {self.seconds:.1f} s"]
        for row in (*self.regions, self.total):
            lines.append(_row_line(row))
        for group in self.failures:
            span = _clock(group.first, self.wall_offset)
            if group.last > group.first:
                span += f"-{_clock(group.last, self.wall_offset)}"
            what = "request(s)" if group.channel == "request" else "websocket drop(s)"
            lines.append(f"  {group.region}: {group.count} failed {what} via {group.route} at "
                         f"{span} ({group.reason}), step: {group.step}")
        return lines

    def to_json(self) -> dict[str, object]:
        def row(r: RegionReport) -> dict[str, object]:
            return {
                "region": r.region, "failed": r.failed, "requests": r.requests,
                "failed_requests": r.failed_requests, "websocket_drops": r.websocket_drops,
                "failed_websockets": r.failed_websockets,
                "longest_gap_seconds": round(r.longest_gap, 3),
                "latency_ms": {p: {"count": v.count, "p50": _ms_value(v.p50),
                                   "p99": _ms_value(v.p99)} for p, v in r.latency.items()},
                "routes": list(r.routes),
            }

        return {"seconds": round(self.seconds, 3), "failed": self.failed,
                "regions": [row(r) for r in self.regions], "total": row(self.total),
                "lines": self.lines(),
                "failures": [{"region": g.region, "channel": g.channel, "reason": g.reason,
                              "route": g.route, "step": g.step, "count": g.count,
                              "first": _clock(g.first, self.wall_offset),
                              "last": _clock(g.last, self.wall_offset)}
                             for g in self.failures]}


def _ms_value(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _clock(at: float, wall_offset: float) -> str:
    wall = at + wall_offset
    return time.strftime("%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 10)}"


def _row_line(row: RegionReport) -> str:
    latency = ", ".join(
        f"{phase} {_ms(v.p50)}/{_ms(v.p99)}" for phase, v in row.latency.items()
        if v.count or phase in ("during", "all")
    )
    gap = f"longest gap {row.longest_gap:.2f} s"
    sockets = (f"websocket drops {row.websocket_drops} ({row.failed_websockets} not "
               f"reconnected within {RECONNECT_GRACE:.0f} s)")
    return (f"{row.region}: {row.failed} failed; {row.failed_requests} of {row.requests} "
            f"requests, {sockets}; {gap}; latency p50/p99 ms {latency}; via "
            f"{' then '.join(row.routes) or '-'}")


def _longest_gap(samples: Sequence[Sample], start: float, end: float) -> float:
    """The longest time without a successful answer, from the user's first request (else
    *start*) to *end*."""
    first = min((s.sent for s in samples), default=start)
    marks = [first, *sorted(s.answered for s in samples if s.ok), end]
    return max((b - a for a, b in itertools.pairwise(marks)), default=end - start)


def _routes(samples: Iterable[Sample]) -> tuple[str, ...]:
    seen: list[str] = []
    for sample in sorted(samples, key=lambda s: s.sent):
        if not seen or seen[-1] != sample.route:
            seen.append(sample.route)
    return tuple(seen)


def _latency(samples: Sequence[Sample], steps: StepLog, phased: bool) -> dict[str, PhaseLatency]:
    by_phase: dict[str, list[float]] = {p: [] for p in (PHASES if phased else ("all",))}
    for sample in samples:
        if sample.ok:
            by_phase[steps.phase_at(sample.sent) if phased else "all"].append(sample.seconds)
    return {p: PhaseLatency(len(v), percentile(v, 0.5), percentile(v, 0.99))
            for p, v in by_phase.items()}


def _row(
    region: str, samples: Sequence[Sample], drops: Sequence[Drop], steps: StepLog,
    start: float, end: float, phased: bool, gap: float,
) -> RegionReport:
    return RegionReport(
        region=region, requests=len(samples),
        failed_requests=sum(1 for s in samples if not s.ok),
        websocket_drops=len(drops), failed_websockets=sum(1 for d in drops if d.failed(end)),
        longest_gap=gap, longest_ws_down=max((d.down_for(end) for d in drops), default=0.0),
        latency=_latency(samples, steps, phased), routes=_routes(samples),
    )


def _failure_groups(
    samples: Sequence[Sample], drops: Sequence[Drop], steps: StepLog, end: float
) -> list[FailureGroup]:
    events = sorted(
        [(s.sent, "request", s.region, s.reason, s.route) for s in samples if not s.ok]
        + [(d.at, "websocket", d.region,
            d.reason + (f", down {d.down_for(end):.2f} s" if d.reconnected is not None
                        else ", not reconnected"), d.route)
           for d in drops if d.failed(end)]
    )
    groups: list[FailureGroup] = []
    last: dict[tuple[str, str], int] = {}
    for at, channel, region, reason, route in events:
        step = steps.step_at(region, at)
        index = last.get((region, channel))
        if index is not None:
            group = groups[index]
            if (group.reason, group.route, group.step) == (reason, route, step):
                groups[index] = FailureGroup(region, channel, reason, route, step,
                                             group.count + 1, group.first, at)
                continue
        last[(region, channel)] = len(groups)
        groups.append(FailureGroup(region, channel, reason, route, step, 1, at, at))
    return groups


def build_report(
    regions: Sequence[str], samples: Sequence[Sample], drops: Sequence[Drop], steps: StepLog,
    *, start: float, end: float, wall_offset: float, phased: bool = True,
) -> ProbeReport:
    """The report of a probe that ran from *start* to *end* (monotonic seconds)."""
    rows = []
    for region in regions:
        mine = [s for s in samples if s.region == region]
        rows.append(_row(region, mine, [d for d in drops if d.region == region], steps,
                         start, end, phased, _longest_gap(mine, start, end)))
    total = replace(
        _row("total", samples, drops, steps, start, end, phased,
             max((r.longest_gap for r in rows), default=0.0)),
        routes=tuple(dict.fromkeys(route for r in rows for route in r.routes)),
    )
    return ProbeReport(
        regions=tuple(rows), total=total,
        failures=tuple(_failure_groups(samples, drops, steps, end)),
        seconds=end - start, wall_offset=wall_offset, phased=phased,
    )
