"""``python -m coder_migrate``: the same command line as ``coder-migrate``."""

from coder_migrate.cli import main

main(prog_name="coder-migrate")
