"""The runbook's steps: a region's changes in runs of one kind, each described by its kind.

A step is a run of consecutive changes of one kind in a site's plan. What people on call
read about it (title, checks, estimate, rollback) is the kind's own
:meth:`~coder_migrate.engine.change.Change.guide`: a kind added later brings its words with
it, and this module never names a kind.

Durations are estimates from the lab (kwok clusters, the Coder emulator, PowerDNS on
loopback); production adds image pulls, workspace build times and DNS TTLs. The one measured
number is helm's (docs/benchmarks.md: median 2.35 s for ``helm upgrade --install --wait``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coder_migrate.engine.change import Change
from coder_migrate.engine.guide import Check, Commands, command, path_word
from coder_migrate.inventory import Primary, Region

__all__ = ["Check", "Commands", "Step", "command", "path_word", "steps_of"]


@dataclass(frozen=True)
class Step:
    number: int
    kind: str
    title: str
    changes: tuple[Change, ...]
    checks: tuple[Check, ...]
    estimate: str
    rollback: str


def steps_of(
    commands: Commands, site: Primary | Region, changes: Sequence[Change]
) -> list[Step]:
    """The site's changes as steps: consecutive changes of one kind form one step."""
    runs: list[list[Change]] = []
    for change in changes:
        if runs and type(runs[-1][0]) is type(change):
            runs[-1].append(change)
        else:
            runs.append([change])
    steps = []
    for number, run in enumerate(runs, start=1):
        guide = run[0].guide()
        if isinstance(site, Region):
            title, checks = guide.title, guide.checks(commands, site, run)
        else:
            title, checks = guide.shared_title or guide.title, guide.shared_checks(commands)
        steps.append(Step(
            number=number, kind=run[0].kind, title=title, changes=tuple(run),
            checks=tuple(checks), estimate=guide.estimate(commands.topology),
            rollback=guide.rollback,
        ))
    return steps
