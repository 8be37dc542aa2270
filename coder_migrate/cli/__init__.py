"""The ``coder-migrate`` command line.

Commands are thin: they parse options, call the engine and print. This module is the only
place where project errors become exit codes (see :mod:`coder_migrate.errors`).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from coder_migrate import __version__
from coder_migrate.cli.console import err_console
from coder_migrate.errors import CoderMigrateError


class _Group(click.Group):
    """Maps project errors to one clear line on stderr and the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CoderMigrateError as error:
            for line in str(error).splitlines() or [type(error).__name__]:
                err_console.print(f"[bold red]error:[/] {line}", highlight=False, markup=True)
            sys.exit(error.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="coder-migrate")
def main() -> None:
    """Deploy and migrate multi-region Coder: primary, regions, GeoDNS."""


def _register() -> None:
    # Imported here so each command module can import `main`-free helpers without cycles.
    from coder_migrate.cli.deploy import apply, plan, rollback, status
    from coder_migrate.cli.dns import dns
    from coder_migrate.cli.inventory import inventory
    from coder_migrate.cli.lab import lab
    from coder_migrate.cli.migrate import migrate
    from coder_migrate.cli.proxy import proxy
    from coder_migrate.cli.runbook import runbook

    main.add_command(plan)
    main.add_command(apply)
    main.add_command(status)
    main.add_command(rollback)
    main.add_command(dns)
    main.add_command(inventory)
    main.add_command(lab)
    main.add_command(migrate)
    main.add_command(proxy)
    main.add_command(runbook)


_register()
