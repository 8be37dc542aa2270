"""The step that ends apply's DNS wave: the authoritative answers equal the plan everywhere.

PowerDNS starts an ``ifurlup`` health check only when the first query for it arrives, and
counts the region as down until that check has passed, so right after an apply the shared
hostname answers the fallback (the primary) for up to one ``lua-health-checks-interval``.
:func:`verify_dns` therefore asks every expectation of ``dns check`` once from each region's
test subnets (that first round is what starts every health check: the warm-up), then
re-asks the wrong answers until they equal the plan or the time is up, showing which regions
are still wrong. It returns one problem per region that never answered as planned;
:func:`raise_unless_verified` is what apply calls and stops on (exit 7): the gate of the DNS
wave (:meth:`coder_migrate.dns.rrset_change.DnsRRSetChange.verify`), once per wave.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from coder_migrate.dns.check import CheckResult, check_dns
from coder_migrate.engine.change import Progress
from coder_migrate.errors import ApplyError, ConfigError
from coder_migrate.inventory.model import Topology

__all__ = [
    "DEFAULT_VERIFY_TIMEOUT",
    "VERIFIED_OPERATIONS",
    "RegionProblem",
    "VerifyOutcome",
    "raise_unless_verified",
    "regions_to_verify",
    "verify_dns",
]

DEFAULT_VERIFY_TIMEOUT = 60.0
VERIFIED_OPERATIONS = frozenset({"deploy", "dns"})
"""The operations (``engine.run.DEPLOY``, and ``engine.run.DNS`` of the ``geodns`` role) whose
DNS wave writes exactly what the inventory asks for, so its answers can be compared with the
plan; a migration checks DNS in its own steps, and a rollback restores older records."""
PROGRESS_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class RegionProblem:
    region: str
    answer: str
    """The first wrong answer: what was asked, from where, what came back, what was planned."""


@dataclass(frozen=True)
class VerifyOutcome:
    problems: tuple[RegionProblem, ...]
    answers: int = 0
    """How many answers were compared with the plan."""
    seconds: float = 0.0
    skipped: str = ""
    """Why nothing could be asked (no server to ask, no test subnet), else empty."""

    @property
    def ok(self) -> bool:
        return not self.problems


def describe_answer(result: CheckResult) -> str:
    e = result.expectation
    got = ", ".join(result.got) or "nothing"
    why = f" ({e.why})" if e.why else ""
    return (f"{e.rdtype} {e.name} from {e.client_subnet} via {result.server} answered {got}, "
            f"expected {', '.join(e.expected) or 'nothing'}{why}")


def _first_per_region(results: Sequence[CheckResult]) -> dict[str, CheckResult]:
    first: dict[str, CheckResult] = {}
    for result in results:
        if not result.ok:
            first.setdefault(result.expectation.region, result)
    return first


def regions_to_verify(topology: Topology, wave_regions: Collection[str]) -> tuple[str, ...]:
    """The regions whose answers a DNS wave can change: every region when the wave touched
    the primary's records (the shared hostname is the primary's), else the wave's own."""
    names = tuple(r.name for r in topology.regions)
    if not wave_regions or topology.primary.name in wave_regions:
        return names
    return tuple(name for name in names if name in wave_regions)


async def verify_dns(
    topology: Topology,
    *,
    regions: Collection[str] | None = None,
    timeout: float = DEFAULT_VERIFY_TIMEOUT,
    progress: Progress | None = None,
) -> VerifyOutcome:
    """Warm every health check, then wait until each region's answers equal the plan."""
    shown: list[float] = []

    def on_round(wrong: Sequence[CheckResult], seconds: float) -> None:
        if progress is None or (shown and seconds - shown[-1] < PROGRESS_EVERY_SECONDS):
            return
        first = _first_per_region(wrong)
        if not shown:  # the warm-up round: each region's full answer, once
            for region, result in first.items():
                progress(region, "gate", f"DNS not as planned yet: {describe_answer(result)}")
        else:
            still = ", ".join(f"{region} ({', '.join(r.got) or 'nothing'})"
                              for region, r in first.items())
            progress("dns", "gate", f"still not as planned after {seconds:.0f} s: {still}")
        shown.append(seconds)

    try:
        report = await check_dns(
            topology, limit=tuple(regions or ()), wait=timeout, on_round=on_round,
        )
    except ConfigError as error:
        # Nothing to ask (a zone file, no nameservers named, no test subnet): say so.
        return VerifyOutcome(problems=(), skipped=error.message)
    problems = tuple(
        RegionProblem(region, describe_answer(result))
        for region, result in _first_per_region(report.results).items()
    )
    return VerifyOutcome(problems=problems, answers=len(report.results), seconds=report.seconds)


async def raise_unless_verified(
    topology: Topology, wave_regions: Collection[str], *, timeout: float,
    progress: Progress | None = None,
) -> VerifyOutcome:
    """Apply's DNS verify step: :func:`verify_dns` for the regions the wave touched; an
    :class:`ApplyError` (exit 7) naming each region still wrong and what it answers."""
    started = time.monotonic()
    regions = regions_to_verify(topology, wave_regions)
    if progress is not None:
        progress("dns", "gate", f"verifying the answers from {', '.join(regions)} "
                                f"(up to {timeout:.0f} s)")
    outcome = await verify_dns(topology, regions=regions, timeout=timeout, progress=progress)
    if outcome.skipped:
        if progress is not None:
            progress("dns", "gate-ok", f"answers not verified: {outcome.skipped}")
        return outcome
    if outcome.problems:
        raise ApplyError(
            f"DNS answers not as planned after {timeout:.0f} s: "
            + "; ".join(f"{p.region}: {p.answer}" for p in outcome.problems)
        )
    if progress is not None:
        progress("dns", "gate-ok", f"every region answers as planned ({outcome.answers} "
                                   f"answers, {time.monotonic() - started:.1f} s)")
    return outcome
