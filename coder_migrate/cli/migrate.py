"""``migrate plan`` and ``migrate apply``: thin commands over :mod:`coder_migrate.migrations`.

``run_migration_plan`` and ``run_migration_apply`` do the work, so ``plan --migration NAME``
and ``apply --migration NAME`` can call them with the same arguments.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from rich.markup import escape

from coder_migrate.cli.console import console, err_console
from coder_migrate.cli.deploy import render_plan
from coder_migrate.cli.options import inventory_option, limit_option, output_option
from coder_migrate.engine.apply import ApplyOptions
from coder_migrate.engine.plan import Plan
from coder_migrate.engine.run import scope_for
from coder_migrate.engine.world import Engine
from coder_migrate.errors import ApplyError, ConfigError, PlanError
from coder_migrate.inventory import load_topology
from coder_migrate.migrations import MIGRATIONS
from coder_migrate.migrations.v1_20_to_v1_21 import (
    MIGRATION,
    apply_migration,
    compute_migration_plan,
)

__all__ = ["migrate", "run_migration_apply", "run_migration_plan"]

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
    if out is not None:
        out.write_text(result.to_json(), encoding="utf-8")
    if output == "json":
        sys.stdout.write(result.to_json())
    else:
        render_plan(result)
        if out is not None:
            console.print(f"Saved to {out}; apply it with `coder-migrate migrate apply -i "
                          f"{inventory_dir} {out}`.")
    if detailed_exitcode and not result.is_empty:
        sys.exit(2)


def run_migration_apply(
    inventory_dir: Path, limit: tuple[str, ...], plan_file: Path | None, auto_approve: bool,
    force: bool, gate_timeout: float, lock_wait: float, migration: str = MIGRATION,
) -> None:
    """Preflight, then carry out the migration: lock, journal, waves with health gates."""
    _check(migration)
    engine = Engine(load_topology(inventory_dir))
    saved = None
    scope = scope_for(limit, dns=False)
    if plan_file is not None:
        saved = Plan.from_json(plan_file.read_text(encoding="utf-8"), source=str(plan_file))
        if saved.operation != migration:
            raise PlanError(f"{plan_file} is a {saved.operation} plan, not {migration}")
        scope = scope_for(saved.limit, dns=False)
    if not auto_approve:
        preview = asyncio.run(compute_migration_plan(engine, scope))
        if saved is not None:
            saved.ensure_matches(preview, source=str(plan_file))
        render_plan(preview)
        if preview.is_empty:
            return
        preview.raise_if_unsafe(force=force)
        if not sys.stdin.isatty():
            raise ConfigError("migrate apply needs --auto-approve when stdin is not a terminal")
        click.confirm("Apply these changes?", abort=True)

    def progress(region: str, phase: str, text: str) -> None:
        colour = {"done": "green", "failed": "red", "gate-ok": "green"}.get(phase, "cyan")
        err_console.print(f"[{colour}]{phase:>8}[/] [bold]{escape(region)}[/] {escape(text)}")

    options = ApplyOptions(
        force=force, gate_timeout=gate_timeout, lock_wait=lock_wait, progress=progress,
        reviewed=saved is not None or not auto_approve,
    )
    try:
        result, report = asyncio.run(
            apply_migration(engine, scope, options, saved, source=str(plan_file or "plan file"))
        )
    except ApplyError as error:
        err_console.print(f"[red]stopped.[/] done: {len(error.done)}, not done: "
                          f"{len(error.not_done)}")
        for change_id in error.not_done:
            err_console.print(f"  not done: {escape(change_id)}")
        raise
    if result.is_empty:
        console.print("No changes. The regions are migrated.")
        return
    console.print(f"Migration applied: {len(report.done)} change(s) in run {report.run}.")


@click.group()
def migrate() -> None:
    """The Coder v1.20 -> v1.21 migration (satellites, Networking v2, retained providers)."""


@migrate.command("plan")
@inventory_option
@limit_option
@output_option
@migration_option
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the plan (JSON with its checksum) for `migrate apply PLAN`.")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when there is nothing to do, 2 when there are changes.")
def plan_command(
    inventory_dir: Path, limit: tuple[str, ...], output: str, migration: str, out: Path | None,
    detailed_exitcode: bool,
) -> None:
    """Preflight every region, then show what the migration would change; change nothing."""
    run_migration_plan(inventory_dir, limit, output, out, detailed_exitcode, migration)


@migrate.command("apply")
@inventory_option
@limit_option
@migration_option
@click.argument("plan_file", required=False,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Allow destructive changes.")
@click.option("--gate-timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds each region may take to become healthy after its changes.")
@click.option("--lock-wait", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds to wait for another apply's lock instead of stopping at once.")
def apply_command(
    inventory_dir: Path, limit: tuple[str, ...], migration: str, plan_file: Path | None,
    auto_approve: bool, force: bool, gate_timeout: float, lock_wait: float,
) -> None:
    """Carry out the migration region by region (canary first); resumable."""
    run_migration_apply(inventory_dir, limit, plan_file, auto_approve, force, gate_timeout,
                        lock_wait, migration)
