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

plan_file_argument = click.argument(
    "plan_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)

auto_approve_option = click.option(
    "--auto-approve", is_flag=True, help="Do not ask for confirmation."
)

rollback_force_option = click.option(
    "--force", is_flag=True,
    help="Restore DNS rrsets someone else changed after the migration wrote them.",
)

gate_timeout_option = click.option(
    "--gate-timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
    help="Seconds each region may take to become healthy after its changes.",
)

lock_wait_option = click.option(
    "--lock-wait", type=click.FloatRange(min=0), default=0.0, show_default=True,
    help="Seconds to wait for another apply's lock instead of stopping at once.",
)

out_option = click.option(
    "--out", "out", type=click.Path(dir_okay=False, path_type=Path),
    help="Write the plan (JSON with its checksum) to apply later.",
)

detailed_exitcode_option = click.option(
    "--detailed-exitcode", is_flag=True,
    help="Exit 0 when there is nothing to do, 2 when there are changes.",
)
