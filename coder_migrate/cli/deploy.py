"""``plan``, ``apply`` and ``status``: thin commands over :mod:`coder_migrate.engine.run`."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from coder_migrate import sensitive
from coder_migrate.cli.console import console, err_console
from coder_migrate.cli.options import (
    auto_approve_option,
    detailed_exitcode_option,
    dns_verify_timeout_option,
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
from coder_migrate.dns.verify import DEFAULT_VERIFY_TIMEOUT
from coder_migrate.engine.apply import ApplyOptions, ApplyReport
from coder_migrate.engine.plan import Action, Plan
from coder_migrate.engine.run import DEPLOY, PlanScope, apply_deploy, compute_plan, scope_for
from coder_migrate.engine.status import site_statuses
from coder_migrate.engine.world import Engine
from coder_migrate.errors import ApplyError, ConfigError
from coder_migrate.inventory import load_topology
from coder_migrate.migrations import MIGRATIONS

__all__ = [
    "apply",
    "confirm",
    "plan",
    "progress",
    "render_plan",
    "report_stopped",
    "rollback",
    "run_apply",
    "show_plan",
    "status",
]

_STYLE = {
    Action.CREATE: "green", Action.UPDATE: "yellow", Action.DELETE: "red",
    Action.ACT: "cyan", Action.KEEP: "dim",
}
_SIGN = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-", Action.ACT: ">",
         Action.KEEP: "="}

deploy_migration_option = click.option(
    "--migration", "migration", type=click.Choice(MIGRATIONS), default=None,
    help="Plan or apply a migration instead of the deployment (same as `migrate plan|apply`).",
)

no_dns_option = click.option(
    "--no-dns", is_flag=True, help="Leave DNS out of this plan (the geodns role does DNS)."
)


def _engine(inventory_dir: Path) -> Engine:
    return Engine(load_topology(inventory_dir))


def render_plan(plan: Plan, *, show_keep: bool = False) -> None:
    """The plan as people read it: waves, then each change with its reason and diff."""
    if plan.is_empty:
        console.print("No changes. The deployment matches the inventory.")
    for wave in plan.waves:
        shown = [c for c in wave.changes if show_keep or c.action is not Action.KEEP]
        if not shown:
            continue
        console.print(f"\n[bold]wave {escape(wave.name)}[/] ({len(wave.effective)} change(s))")
        for change in shown:
            style = _STYLE[change.action]
            console.print(
                f"  [{style}]{_SIGN[change.action]} {change.action.value:<6}[/] "
                f"{escape(change.target)}  [dim]# {escape(change.reason)}[/]"
                + ("  [bold red](needs --force)[/]" if change.needs_force else "")
            )
            for line in change.diff.splitlines():
                colour = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
                text = escape(line)
                console.print(f"      [{colour}]{text}[/]" if colour else f"      {text}")
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    counts = {a: sum(1 for c in plan.effective_changes if c.action is a) for a in Action}
    console.print(
        f"\nPlan: {counts[Action.CREATE]} to create, {counts[Action.UPDATE]} to update, "
        f"{counts[Action.ACT]} to act, {counts[Action.DELETE]} to delete. "
        f"checksum {plan.checksum[:12]}"
    )


@click.command(epilog=examples(
    "coder-migrate plan -i inventories/lab",
    "coder-migrate plan -i inventories/prod --limit eu-west --out plan.json",
    "coder-migrate plan -i inventories/prod --detailed-exitcode --output json",
))
@inventory_option
@limit_option
@output_option
@no_dns_option
@out_option
@detailed_exitcode_option
@deploy_migration_option
def plan(
    inventory_dir: Path, limit: tuple[str, ...], output: str, no_dns: bool, out: Path | None,
    detailed_exitcode: bool, migration: str | None,
) -> None:
    """Show what apply would change, in waves; change nothing."""
    if migration is not None:
        from coder_migrate.cli.migrate import run_migration_plan

        run_migration_plan(inventory_dir, limit, output, out, detailed_exitcode, migration)
        return
    engine = _engine(inventory_dir)
    result = asyncio.run(compute_plan(engine, scope_for(limit, dns=not no_dns)))
    show_plan(result, output=output, out=out, detailed_exitcode=detailed_exitcode,
              apply_command=f"coder-migrate apply -i {inventory_dir}")


def show_plan(
    result: Plan, *, output: str, out: Path | None, detailed_exitcode: bool, apply_command: str
) -> None:
    """Print (and with *out* save) a plan; ``--detailed-exitcode`` exits 2 on changes."""
    if out is not None:
        out.write_text(sensitive.scrub(result.to_json()), encoding="utf-8")
    if output == "json":
        sys.stdout.write(result.to_json())
    else:
        render_plan(result)
        if out is not None:
            console.print(f"Saved to {out}; apply it with `{apply_command} {out}`.", markup=False)
    if detailed_exitcode and not result.is_empty:
        sys.exit(2)


@click.command(epilog=examples(
    "coder-migrate apply -i inventories/lab",
    "coder-migrate apply -i inventories/prod plan.json",
    "coder-migrate apply -i inventories/prod --limit eu-west --auto-approve",
))
@inventory_option
@limit_option
@no_dns_option
@plan_file_argument
@auto_approve_option
@click.option("--force", is_flag=True, help="Allow deletions and large DNS changes.")
@gate_timeout_option
@dns_verify_timeout_option
@lock_wait_option
@deploy_migration_option
@probe_option
def apply(
    inventory_dir: Path, limit: tuple[str, ...], no_dns: bool, plan_file: Path | None,
    auto_approve: bool, force: bool, gate_timeout: float, dns_verify_timeout: float,
    lock_wait: float, migration: str | None, probe: bool,
) -> None:
    """Carry out the plan: lock, journal, waves with health gates."""
    if migration is not None:
        from coder_migrate.cli.migrate import run_migration_apply

        run_migration_apply(inventory_dir, limit, plan_file, auto_approve, force, gate_timeout,
                            lock_wait, migration, probe=probe)
        return
    if probe:
        raise ConfigError("--probe watches a migration: use it with --migration "
                          "v1.20-to-v1.21 (or `migrate apply`, `rollback --migration`)")
    engine = _engine(inventory_dir)
    saved = None
    scope = scope_for(limit, dns=not no_dns)
    if plan_file is not None:
        from coder_migrate.kinds import KINDS  # every kind's module: only to read a plan file

        saved = Plan.from_json(plan_file.read_text(encoding="utf-8"), kinds=KINDS,
                               source=str(plan_file))
        if (limit and tuple(dict.fromkeys(limit)) != saved.limit) or (
            no_dns and saved.operation == DEPLOY
        ):
            raise ConfigError(
                f"{plan_file} was made with --limit {' '.join(saved.limit) or '(none)'} and "
                f"{'without' if saved.operation != DEPLOY else 'with'} DNS; apply it without "
                "--limit/--no-dns, or make a new plan"
            )
        scope = scope_for(saved.limit, dns=saved.operation == DEPLOY)
    result, report = run_apply(
        engine, scope, compute=compute_plan, execute=apply_deploy, saved=saved,
        plan_file=plan_file, auto_approve=auto_approve, force=force,
        gate_timeout=gate_timeout, lock_wait=lock_wait, dns_verify_timeout=dns_verify_timeout,
    )
    if result.is_empty:
        console.print("No changes. The deployment matches the inventory.")
        return
    console.print(f"Apply complete: {len(report.done)} change(s) in run {report.run}.")


def progress(region: str, phase: str, text: str) -> None:
    """Apply progress, one line per change and gate, on stderr."""
    colour = {"done": "green", "failed": "red", "gate-ok": "green"}.get(phase, "cyan")
    err_console.print(f"[{colour}]{phase:>8}[/] [bold]{escape(region)}[/] {escape(text)}")


def report_stopped(error: ApplyError) -> None:
    err_console.print(f"[red]stopped.[/] done: {len(error.done)}, not done: "
                      f"{len(error.not_done)}")
    for change_id in error.not_done:
        err_console.print(f"  not done: {escape(change_id)}")


def confirm(preview: Plan, *, force: bool, question: str = "Apply these changes?") -> bool:
    """Show *preview* and ask; ``False`` when there is nothing to do."""
    render_plan(preview)
    if preview.is_empty:
        return False
    preview.raise_if_unsafe(force=force)
    if not sys.stdin.isatty():
        raise ConfigError("without --auto-approve this needs a terminal to ask on")
    click.confirm(question, abort=True)
    return True


def run_apply(
    engine: Engine, scope: PlanScope, *,
    compute: Callable[[Engine, PlanScope], Coroutine[Any, Any, Plan]],
    execute: Callable[..., Coroutine[Any, Any, tuple[Plan, ApplyReport]]],
    saved: Plan | None, plan_file: Path | None, auto_approve: bool, force: bool,
    gate_timeout: float, lock_wait: float, dns_verify_timeout: float = DEFAULT_VERIFY_TIMEOUT,
    probe: bool = False,
) -> tuple[Plan, ApplyReport]:
    """The one apply flow of every operation: preview and confirm (unless --auto-approve),
    then apply exactly the saved or confirmed plan, or refuse it as stale. The apply itself
    observes once (:func:`coder_migrate.engine.apply.apply_operation`); with *probe*, the
    synthetic users of :func:`coder_migrate.cli.probe.probing` watch it."""

    if not auto_approve:
        preview = asyncio.run(compute(engine, scope))
        if saved is not None:
            saved.ensure_matches(preview, source=str(plan_file))
        if not confirm(preview, force=force):
            return preview, ApplyReport(run="")
        if saved is None:
            saved = preview  # apply exactly what was confirmed, or refuse
    source = str(plan_file) if plan_file else "the plan you confirmed"
    with probing(engine, progress, enabled=probe) as watched:
        options = ApplyOptions(
            force=force, gate_timeout=gate_timeout, lock_wait=lock_wait, progress=watched,
            dns_verify_timeout=dns_verify_timeout,
        )
        try:
            result: tuple[Plan, ApplyReport] = asyncio.run(
                execute(engine, scope, options, saved, source=source)
            )
        except ApplyError as error:
            report_stopped(error)
            raise
    return result


@click.command(epilog=examples(
    "coder-migrate status -i inventories/lab",
    "coder-migrate status -i inventories/prod --limit eu-west --output json",
))
@inventory_option
@limit_option
@output_option
def status(inventory_dir: Path, limit: tuple[str, ...], output: str) -> None:
    """One row per site: release, pods, registration, reachability; with coder_load_balancer
    or coder_zones, the Service's address and replicas ready per zone."""
    engine = _engine(inventory_dir)
    rows = asyncio.run(site_statuses(engine, limit))
    if output == "json":
        sys.stdout.write(json.dumps([r.as_dict() for r in rows], indent=2) + "\n")
    else:
        table = Table(title=escape(f"coder-migrate status: {engine.topology.source}"))
        # The Service and zone columns when the inventory asks for a load balancer or zones
        # (seed 004), the provisioners column when a region has coder_provisioners;
        # --output json always has them.
        sites = engine.sites(limit)
        shaped = any(s.load_balancer is not None or s.zones for s in sites)
        extra = ("service", "zones") if shaped else ()
        provisioners = any(r.provisioners for r in rows)
        for column in ("site", "chart", "release", "pods", "registration", "reachable",
                       *extra, *(["provisioners"] if provisioners else []), "detail"):
            table.add_column(column)
        for row in rows:
            style = "green" if row.healthy else "red"
            cells = (escape(row.service), escape(row.zones)) if shaped else ()
            table.add_row(
                escape(row.site), escape(row.chart), escape(row.release_status), escape(row.pods),
                f"[{style}]{escape(row.registration)}[/]", "yes" if row.reachable else "no",
                *cells, *([escape(row.provisioners or "-")] if provisioners else []),
                escape(row.detail),
            )
        console.print(table)
    if not all(r.healthy for r in rows):
        sys.exit(1)


@click.command(epilog=examples(
    "coder-migrate rollback -i inventories/prod --migration v1.20-to-v1.21 --limit eu-west",
))
@inventory_option
@limit_option
@click.option("--migration", "migration", type=click.Choice(MIGRATIONS), required=True,
              help="The migration to undo.")
@auto_approve_option
@rollback_force_option
@lock_wait_option
@probe_option
def rollback(
    inventory_dir: Path, limit: tuple[str, ...], migration: str, auto_approve: bool,
    force: bool, lock_wait: float, probe: bool,
) -> None:
    """Undo a migration from its journal, newest step first (same as `migrate rollback`)."""
    from coder_migrate.cli.migrate import run_migration_rollback

    run_migration_rollback(inventory_dir, limit, auto_approve, lock_wait, migration,
                           force=force, probe=probe)
