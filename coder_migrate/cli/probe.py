"""``probe`` and ``--probe``: thin commands over :mod:`coder_migrate.probe`."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.markup import escape

from coder_migrate.cli.console import console, err_console
from coder_migrate.cli.options import examples, inventory_option, output_option
from coder_migrate.engine.change import Progress
from coder_migrate.engine.journal import Journal, JournalEntry
from coder_migrate.engine.world import Engine
from coder_migrate.errors import CoderMigrateError, redact
from coder_migrate.inventory import load_topology

__all__ = ["SETTLE_SECONDS", "probe", "probe_option", "probing"]

#: Seconds the users run before the operation starts and after it ends ("before", "after").
SETTLE_SECONDS = 2.0

probe_option = click.option(
    "--probe", is_flag=True,
    help="Keep a synthetic user per region on its test workspace's app (a request every "
    "200 ms and a websocket, through the address users use) while this runs, and report "
    "what they saw: failures, the longest gap, p50/p99 latency, the step of each failure.",
)


def _print(report_lines: list[str], failed: int) -> None:
    for index, line in enumerate(report_lines):
        colour = "" if index == 0 else ("red" if " failed " in line and failed else "")
        text = escape(line)
        console.print(f"[{colour}]{text}[/]" if colour else text)


@contextmanager
def probing(engine: Engine, progress: Progress, *, enabled: bool) -> Iterator[Progress]:
    """Around an operation: with *enabled*, the synthetic users run from
    :data:`SETTLE_SECONDS` before until as long after it, and the report is printed at the
    end, also when the operation failed; yields the progress callback to give the runner."""
    if not enabled:
        yield progress
        return
    from coder_migrate.probe import ProbeRun

    run = ProbeRun.of(engine.topology, engine.session_token())

    def both(region: str, phase: str, text: str) -> None:
        run.progress(region, phase, text)
        progress(region, phase, text)

    run.start()
    time.sleep(SETTLE_SECONDS)
    try:
        yield both
    finally:
        run.finish_operation()
        time.sleep(SETTLE_SECONDS)
        report = run.stop()
        _print(report.lines(), report.failed)


@click.command(epilog=examples(
    "coder-migrate probe -i inventories/lab",
    "coder-migrate probe -i inventories/prod --seconds 60 --output json",
    "coder-migrate probe -i inventories/prod --seconds 3600 --ready-file /tmp/p/ready "
    "--until-file /tmp/p/stop",
))
@inventory_option
@click.option("--seconds", type=click.FloatRange(min=1, max=86400), default=10.0,
              show_default=True, help="How long the synthetic users stay online (at most, "
              "with --until-file).")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Create this file once every user is online, so a script (the migrate "
              "playbook) starts its operation only then.")
@click.option("--until-file", type=click.Path(dir_okay=False, path_type=Path),
              help="End as soon as this file exists (checked every 200 ms), before --seconds.")
@output_option
def probe(
    inventory_dir: Path, seconds: float, ready_file: Path | None, until_file: Path | None,
    output: str,
) -> None:
    """A synthetic user per region on its test workspace's app, for --seconds; exit 1 when
    any request failed or a websocket was not reconnected within 1 s."""
    from coder_migrate.probe import ProbeRun

    engine = Engine(load_topology(inventory_dir))
    run = ProbeRun.of(engine.topology, engine.session_token())
    run.start()
    if ready_file is not None:
        ready_file.touch()
    phased = False
    try:
        _stay_online(seconds, until_file)
        # The steps of an apply that ran meanwhile in another process, from its journal.
        phased = run.replay_journal(_journal_entries(engine))
    finally:
        report = run.stop(phased=phased)
    if output == "json":
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        _print(report.lines(), report.failed)
    if report.failed:
        sys.exit(1)


def _journal_entries(engine: Engine) -> list[JournalEntry]:
    """The engine's journal, or nothing when the primary's cluster cannot be read now (the
    report then names no steps; what users saw is reported all the same)."""
    try:
        return asyncio.run(Journal(engine.primary_kube, engine.state_namespace).history())
    except CoderMigrateError as error:
        err_console.print(
            f"probe: the journal is not readable, steps not named: {escape(redact(str(error)))}"
        )
        return []


def _stay_online(seconds: float, until_file: Path | None) -> None:
    """Sleep *seconds*, or less when *until_file* appears."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if until_file is not None and until_file.exists():
            return
        time.sleep(min(left, 0.2) if until_file is not None else left)
