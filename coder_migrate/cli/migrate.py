"""``migrate plan|apply|rollback|status``: thin commands over :mod:`coder_migrate.migrations`.

``run_migration_plan``, ``run_migration_apply`` and ``run_migration_rollback`` do the work, so
``plan --migration NAME``, ``apply --migration NAME`` and ``rollback --migration NAME`` can
call them with the same arguments.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from coder_migrate.cli.console import console, err_console
from coder_migrate.cli.deploy import confirm, progress, report_stopped, run_apply, show_plan
from coder_migrate.cli.options import (
    auto_approve_option,
    detailed_exitcode_option,
    examples,
    gate_timeout_option,
    inventory_option,
    limit_option,
    lock_wait_option,
    out_option,
    output_option,
    plan_file_argument,
    rollback_force_option,
)
from coder_migrate.cli.probe import probe_option, probing
from coder_migrate.engine.apply import ApplyOptions
from coder_migrate.engine.plan import Plan
from coder_migrate.engine.run import scope_for
from coder_migrate.engine.world import Engine
from coder_migrate.errors import ApplyError, ConfigError, PlanError
from coder_migrate.inventory import load_topology
from coder_migrate.kinds import KINDS
from coder_migrate.migrations import MIGRATIONS
from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION
from coder_migrate.migrations.v1_20_to_v1_21.plan import apply_migration, compute_migration_plan
from coder_migrate.migrations.v1_20_to_v1_21.rollback import (
    compute_rollback_plan,
    rollback_migration,
)
from coder_migrate.migrations.v1_20_to_v1_21.status import migration_status

__all__ = [
    "migrate",
    "run_migration_apply",
    "run_migration_plan",
    "run_migration_rollback",
    "run_migration_status",
]

migration_option = click.option(
    "--migration", "migration", type=click.Choice(MIGRATIONS), default=MIGRATION,
    show_default=True, help="Which migration.",
)


def _check(migration: str) -> None:
    if migration != MIGRATION:
        raise ConfigError(f"--migration {migration}: known migrations are {', '.join(MIGRATIONS)}")


def run_migration_plan(
    inventory_dir: Path, limit: tuple[str, ...], output: str, out: Path | None,
    detailed_exitcode: bool, migration: str = MIGRATION,
) -> None:
    """Preflight, then show (or write) the migration plan; change nothing."""
    _check(migration)
    engine = Engine(load_topology(inventory_dir))
    result = asyncio.run(compute_migration_plan(engine, scope_for(limit, dns=False)))
    show_plan(result, output=output, out=out, detailed_exitcode=detailed_exitcode,
              apply_command=f"coder-migrate migrate apply -i {inventory_dir}")


def run_migration_apply(
    inventory_dir: Path, limit: tuple[str, ...], plan_file: Path | None, auto_approve: bool,
    force: bool, gate_timeout: float, lock_wait: float, migration: str = MIGRATION, *,
    probe: bool = False,
) -> None:
    """Preflight, then carry out the migration: lock, journal, waves with health gates;
    with *probe*, synthetic users watch it (:mod:`coder_migrate.probe`)."""
    _check(migration)
    engine = Engine(load_topology(inventory_dir))
    saved = None
    scope = scope_for(limit, dns=False)
    if plan_file is not None:
        saved = Plan.from_json(plan_file.read_text(encoding="utf-8"), kinds=KINDS,
                               source=str(plan_file))
        if saved.operation != migration:
            raise PlanError(f"{plan_file} is a {saved.operation} plan, not {migration}")
        scope = scope_for(saved.limit, dns=False)
    result, report = run_apply(
        engine, scope, compute=compute_migration_plan, execute=apply_migration, saved=saved,
        plan_file=plan_file, auto_approve=auto_approve, force=force,
        gate_timeout=gate_timeout, lock_wait=lock_wait, probe=probe,
    )
    if result.is_empty:
        console.print("No changes. The regions are migrated.")
        return
    console.print(f"Migration applied: {len(report.done)} change(s) in run {report.run}.")


def run_migration_rollback(
    inventory_dir: Path, limit: tuple[str, ...], auto_approve: bool, lock_wait: float,
    migration: str = MIGRATION, *, force: bool = False, probe: bool = False,
) -> None:
    """Undo the migration of the regions in *limit* (all when empty) from the journal;
    *force* restores DNS rrsets someone else changed after the migration wrote them; with
    *probe*, synthetic users watch it (:mod:`coder_migrate.probe`)."""
    _check(migration)
    engine = Engine(load_topology(inventory_dir))
    regions = tuple(dict.fromkeys(limit))
    if not auto_approve:
        preview = asyncio.run(compute_rollback_plan(engine, regions, force=force))
        if not confirm(preview, force=False, question="Roll back these changes?"):
            console.print("Nothing to roll back.")
            return
    with probing(engine, progress, enabled=probe) as watched:
        options = ApplyOptions(force=force, lock_wait=lock_wait, progress=watched)
        try:
            result, report = asyncio.run(rollback_migration(engine, regions, options))
        except ApplyError as error:
            report_stopped(error)
            raise
    if result.is_empty:
        console.print("Nothing to roll back.")
        return
    console.print(f"Rollback applied: {len(report.done)} change(s) in run {report.run}. The "
                  "old workspace-provider releases serve the region(s) again.")


def run_migration_status(inventory_dir: Path, output: str, migration: str = MIGRATION) -> None:
    """Per region: the last finished step, when, by whom, and what comes next."""
    _check(migration)
    engine = Engine(load_topology(inventory_dir))
    rows, problem = asyncio.run(migration_status(engine))
    if output == "json":
        sys.stdout.write(json.dumps({"migration": migration, "plan_problem": problem or None,
                                     "regions": [r.to_json() for r in rows]}, indent=2) + "\n")
        return
    table = Table(title=escape(f"migration {migration}: {engine.topology.source}"))
    for column in ("region", "step", "change", "at", "by", "next"):
        table.add_column(column)
    for row in rows:
        table.add_row(escape(row.region), escape(row.step), escape(row.change_id), escape(row.at),
                      escape(row.by),
                      escape(row.next) + (" (from the journal)" if row.next_source == "journal"
                                          else ""))
    console.print(table)
    if problem:
        err_console.print(f"[yellow]next steps from the journal:[/] the plan could not be "
                          f"computed: {escape(problem)}")


@click.group(epilog=examples(
    "coder-migrate migrate plan -i inventories/prod --limit eu-west",
    "coder-migrate migrate apply -i inventories/prod --limit eu-west",
    "coder-migrate migrate status -i inventories/prod",
))
def migrate() -> None:
    """The Coder v1.20 -> v1.21 migration (satellites, Networking v2, retained providers)."""


@migrate.command("plan", epilog=examples(
    "coder-migrate migrate plan -i inventories/prod",
    "coder-migrate migrate plan -i inventories/prod --limit eu-west --out migration.json",
))
@inventory_option
@limit_option
@output_option
@migration_option
@out_option
@detailed_exitcode_option
def plan_command(
    inventory_dir: Path, limit: tuple[str, ...], output: str, migration: str, out: Path | None,
    detailed_exitcode: bool,
) -> None:
    """Preflight every region, then show what the migration would change; change nothing."""
    run_migration_plan(inventory_dir, limit, output, out, detailed_exitcode, migration)


@migrate.command("apply", epilog=examples(
    "coder-migrate migrate apply -i inventories/prod --limit eu-west",
    "coder-migrate migrate apply -i inventories/prod migration.json",
))
@inventory_option
@limit_option
@migration_option
@plan_file_argument
@auto_approve_option
@click.option("--force", is_flag=True, help="Allow destructive changes.")
@gate_timeout_option
@lock_wait_option
@probe_option
def apply_command(
    inventory_dir: Path, limit: tuple[str, ...], migration: str, plan_file: Path | None,
    auto_approve: bool, force: bool, gate_timeout: float, lock_wait: float, probe: bool,
) -> None:
    """Carry out the migration region by region (canary first); resumable."""
    run_migration_apply(inventory_dir, limit, plan_file, auto_approve, force, gate_timeout,
                        lock_wait, migration, probe=probe)


@migrate.command("rollback", epilog=examples(
    "coder-migrate migrate rollback -i inventories/prod --limit eu-west",
))
@inventory_option
@limit_option
@migration_option
@auto_approve_option
@rollback_force_option
@lock_wait_option
@probe_option
def rollback_command(
    inventory_dir: Path, limit: tuple[str, ...], migration: str, auto_approve: bool,
    force: bool, lock_wait: float, probe: bool,
) -> None:
    """Undo the migration from the journal, region by region in reverse; resumable."""
    run_migration_rollback(inventory_dir, limit, auto_approve, lock_wait, migration,
                           force=force, probe=probe)


@migrate.command("status", epilog=examples(
    "coder-migrate migrate status -i inventories/prod",
    "coder-migrate migrate status -i inventories/prod --output json",
))
@inventory_option
@output_option
@migration_option
def status_command(inventory_dir: Path, output: str, migration: str) -> None:
    """Per region: the step it is at, when, by whom, and what is next."""
    run_migration_status(inventory_dir, output, migration)
