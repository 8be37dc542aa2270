"""The ``coder-migrate`` command line.

Commands are thin: they parse options, call the engine and print. This module is the only
place where project errors become exit codes (see :mod:`coder_migrate.errors`).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from coder_migrate import __version__, inventory_listing
from coder_migrate.cli.console import err_console
from coder_migrate.errors import CoderMigrateError

# Each command's module is imported only when that command runs (or for --help): `plan`
# should not pay for importing the proxy, the lab or the runbook renderer.
COMMANDS = {
    "plan": "coder_migrate.cli.deploy",
    "apply": "coder_migrate.cli.deploy",
    "status": "coder_migrate.cli.deploy",
    "rollback": "coder_migrate.cli.deploy",
    "dns": "coder_migrate.cli.dns",
    "inventory": "coder_migrate.cli.inventory",
    "lab": "coder_migrate.cli.lab",
    "migrate": "coder_migrate.cli.migrate",
    "proxy": "coder_migrate.cli.proxy",
    "runbook": "coder_migrate.cli.runbook",
}


class _Group(click.Group):
    """Loads commands lazily; maps project errors to one clear line on stderr and the
    error's exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMANDS.get(cmd_name)
        if module_name is None:
            return None
        command = getattr(importlib.import_module(module_name), cmd_name)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{cmd_name} is not a click command")
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        inventory_dir = _inventory_argument(args)
        if inventory_dir is not None:
            inventory_listing.start(inventory_dir)  # runs while the command's modules import
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CoderMigrateError as error:
            for line in str(error).splitlines() or [type(error).__name__]:
                err_console.print(f"[bold red]error:[/] {line}", highlight=False, markup=True)
            sys.exit(error.exit_code)


def _inventory_argument(args: list[str]) -> Path | None:
    """The directory given with ``-i`` / ``--inventory``, if any (before click parses it)."""
    for index, arg in enumerate(args):
        if arg in ("-i", "--inventory") and index + 1 < len(args):
            return Path(args[index + 1])
        if arg.startswith("--inventory="):
            return Path(arg.split("=", 1)[1])
        if arg.startswith("-i") and len(arg) > 2 and not arg.startswith("--"):
            return Path(arg[2:])
    return None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="coder-migrate")
def main() -> None:
    """Deploy and migrate multi-region Coder: primary, regions, GeoDNS."""
