"""Options shared by several commands, each defined once (pip-tools style)."""

from __future__ import annotations

from pathlib import Path

import click

inventory_option = click.option(
    "-i",
    "--inventory",
    "inventory_dir",
    type=click.Path(exists=True, file_okay=False, dir_okay=True, path_type=Path),
    required=True,
    envvar="CODER_MIGRATE_INVENTORY",
    help="Inventory directory (hosts.yml + group_vars/), e.g. inventories/lab.",
)

output_option = click.option(
    "--output",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Human-readable text or JSON for automation.",
)

limit_option = click.option(
    "--limit",
    "limit",
    multiple=True,
    metavar="REGION",
    help="Only these regions (repeatable); the primary is always observed.",
)
