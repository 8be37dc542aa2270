"""The Coder API emulator: a v1.20/v1.21 or v2 primary on loopback (docs/coder-emulator.md)."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["serve_command"]


def serve_command(
    *,
    listen: str,
    state_dir: Path,
    mode: str,
    token_file: Path,
    config: Path | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command line that runs the emulator (the lab and the test fixtures use it)."""
    command = [
        python, "-m", "coder_migrate.lab.coderd", "serve",
        "--listen", listen,
        "--state-dir", str(state_dir),
        "--mode", mode,
        "--token-file", str(token_file),
    ]  # fmt: skip
    if config is not None:
        command += ["--config", str(config)]
    return command
