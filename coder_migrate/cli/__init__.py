"""The ``coder-migrate`` command line.

Commands are thin: they parse options, call the engine and print. This module is the only
place where errors become exit codes (see :mod:`coder_migrate.errors`): a project error is
one line per problem and its class's code; anything else is one line and exit 1, with the
traceback under ``--debug``. Everything printed passes :func:`coder_migrate.sensitive.scrub`.

A new command: a module in ``COMMANDS``, options from :mod:`coder_migrate.cli.options`, and
``epilog=examples(...)`` (:func:`coder_migrate.cli.options.examples`); a test walks every
command's ``--help`` for its example.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from typing import Any

import click
from rich.text import Text

from coder_migrate import __version__, inventory_listing, sensitive
from coder_migrate.cli.console import err_console
from coder_migrate.cli.options import examples
from coder_migrate.errors import CoderMigrateError, redact

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
    "probe": "coder_migrate.cli.probe",
    "proxy": "coder_migrate.cli.proxy",
    "rotate": "coder_migrate.cli.rotate",
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

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with sensitive.scrubbed_output():
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CoderMigrateError as error:
            for line in str(error).splitlines() or [type(error).__name__]:
                print_error(line)
            sys.exit(error.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if ctx.params.get("debug"):
                traceback.print_exc()
            else:
                print_error(f"unexpected {type(error).__name__}: {_one_line(str(error))} (run "
                            "again with --debug for the traceback, and report it)")
            sys.exit(1)


def print_error(line: str) -> None:
    """One error line on stderr; the text is never read as rich markup."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", line), highlight=False)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(redact(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


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


EXIT_CODES = {
    0: "success",
    1: "an unexpected error (--debug shows the traceback); status: a site is unhealthy",
    2: "usage; plan --detailed-exitcode: there are changes",
    3: "inventory or configuration",
    4: "lab",
    5: "a provider (Kubernetes, Helm, DNS, Coder) refused",
    6: "plan refused",
    7: "apply failed",
    8: "proxy",
}


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "coder-migrate inventory validate -i inventories/example",
        "coder-migrate plan -i inventories/lab",
        "coder-migrate apply -i inventories/lab --limit eu-west",
    ) + "\n\n\b\nDocs (README.md, docs/):\n  docs/inventory.md  every inventory key\n"
    "  docs/deploy.md, runbook.md, dns.md, lab.md, proxy.md\n\n\b\nExit codes:\n"
    + "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items()),
)
@click.option("--debug", is_flag=True, envvar="CODER_MIGRATE_DEBUG",
              help="Print the traceback of an unexpected error (env CODER_MIGRATE_DEBUG=1).")
@click.version_option(__version__, "--version", prog_name="coder-migrate")
def main(debug: bool) -> None:
    """Deploy and migrate multi-region Coder: primary, regions, GeoDNS."""
