"""Shared rich consoles: results on stdout, diagnostics and progress on stderr."""

from __future__ import annotations

import os
import sys

from rich.console import Console


def _width(stream: object) -> int | None:
    # Piped output (logs, CI, files) gets a wide fixed width so tables are not folded into
    # unreadable columns; a terminal or COLUMNS decides otherwise.
    isatty = getattr(stream, "isatty", None)
    if "COLUMNS" in os.environ or (callable(isatty) and isatty()):
        return None
    return 160


console = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))
