"""Options shared by several commands, each defined once (pip-tools style), and the help
epilog every command has (:func:`examples`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from coder_migrate.inventory import vault

_Command = TypeVar("_Command", bound=Callable[..., Any])


def examples(*lines: str) -> str:
    """A command's help epilog: its examples, one command line each, kept as written.

    Every command has one (``@click.command(epilog=examples("coder-migrate ..."))``); a test
    runs ``--help`` of each command and looks for it.
    """
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


_inventory_dir_option = click.option(
    "-i",
    "--inventory",
    "inventory_dir",
    type=click.Path(exists=True, file_okay=False, dir_okay=True, path_type=Path),
    required=True,
    envvar="CODER_MIGRATE_INVENTORY",
    help="Inventory directory (hosts.yml or INI hosts, group_vars/, host_vars/), e.g. "
    "inventories/lab.",
)


def _use_password_files(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    vault.configure(password_files=tuple(value))


def _use_vault_ids(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    vault.configure(vault_ids=tuple(value))


_vault_password_file_option = click.option(
    "--vault-password-file", multiple=True, expose_value=False, callback=_use_password_files,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Vault password file (or script) for !vault values, as ansible-playbook takes it; "
    "ANSIBLE_VAULT_PASSWORD_FILE and ansible.cfg work too. Read only when a !vault secret "
    "is used.",
)

_vault_id_option = click.option(
    "--vault-id", multiple=True, expose_value=False, callback=_use_vault_ids,
    metavar="LABEL@SOURCE", help="Vault identity for !vault values, as ansible-playbook "
    "takes it (repeatable).",
)


def inventory_option(command: _Command) -> _Command:
    """``-i DIR`` and Ansible's vault password options for ``!vault`` values in it."""
    return _inventory_dir_option(_vault_password_file_option(_vault_id_option(command)))


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

dns_verify_timeout_option = click.option(
    "--dns-verify-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
    help="Seconds the DNS wave waits, after warming the health checks, for every region's "
    "answers to be as planned (exit 7 when they are not).",
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
