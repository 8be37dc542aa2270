"""``coder-migrate runbook``: a region rollout runbook, offline, from the inventory."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from coder_migrate import sensitive
from coder_migrate.cli.console import console
from coder_migrate.cli.options import examples, inventory_option
from coder_migrate.errors import ConfigError
from coder_migrate.inventory import load_topology
from coder_migrate.runbook import FORMATS, render_runbook

__all__ = ["runbook"]


@click.command("runbook", epilog=examples(
    "coder-migrate runbook -i inventories/prod > runbook.md",
    "coder-migrate runbook -i inventories/prod --region eu-west --format html --out eu-west.html",
))
@inventory_option
@click.option("--region", "region", default=None, metavar="REGION",
              help="Only this region (default: every region, the canary first, then the "
                   "shared names).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True,
              help="Markdown or a standalone HTML page.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the runbook to this file instead of stdout.")
def runbook(inventory_dir: Path, region: str | None, fmt: str, out: Path | None) -> None:
    """Print the migration runbook: prerequisites, commands, checks, durations, rollback.

    Needs no cluster or Coder access: it plans for an assumed pre-migration world with the
    planner `migrate apply` uses (see docs/runbook.md).
    """
    text = render_runbook(load_topology(inventory_dir), str(inventory_dir), region=region,
                          fmt=fmt)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(sensitive.scrub(text), encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot write it ({error.strerror})") from None
    console.print(f"Runbook written to {out}.", markup=False)
