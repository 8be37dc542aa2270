"""``python -m coder_migrate.lab.coderd serve ...``: run the Coder emulator."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from coder_migrate.errors import CoderMigrateError
from coder_migrate.lab.coderd.config import MODES, load_config
from coder_migrate.lab.coderd.server import EmulatorServer, parse_listen, serve


@click.group()
def main() -> None:
    """The Coder API emulator the lab and the tests use."""


@main.command("serve")
@click.option("--listen", required=True, help="HOST:PORT on loopback, e.g. 127.0.0.1:7080.")
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the SQLite state.",
)
@click.option("--mode", required=True, type=click.Choice(MODES), help="Which primary to play.")
@click.option(
    "--token-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the admin session token (0600).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Seed and settings, YAML or JSON.",
)
@click.option("--log-level", default="WARNING", show_default=True)
def serve_command(
    listen: str,
    state_dir: Path,
    mode: str,
    token_file: Path,
    config_path: Path | None,
    log_level: str,
) -> None:
    """Serve the emulator until SIGTERM/SIGINT."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        host, port = parse_listen(listen)
        config = load_config(config_path)
        server = EmulatorServer(
            mode=mode,  # type: ignore[arg-type]  # click.Choice(MODES) checked it
            config=config,
            state_dir=state_dir,
            token_file=token_file,
            host=host,
            port=port,
        )
        asyncio.run(serve(server))
    except CoderMigrateError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
