"""``python -m coder_migrate.proxy [OPTIONS]``: the same as ``coder-migrate proxy serve``."""

from __future__ import annotations

import sys

from coder_migrate.cli import main

if __name__ == "__main__":
    main(["proxy", "serve", *sys.argv[1:]], prog_name="python -m coder_migrate.proxy serve")
