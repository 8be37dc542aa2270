"""``coder-migrate rotate``: replace a deployment-wide secret everywhere it is stored."""

from __future__ import annotations

import click

from coder_migrate.cli.console import console
from coder_migrate.cli.deploy import _engine, run_apply
from coder_migrate.cli.options import (
    auto_approve_option,
    examples,
    gate_timeout_option,
    inventory_option,
    lock_wait_option,
)
from coder_migrate.engine.provisioner_plan import apply_rotation, compute_rotation
from coder_migrate.engine.run import scope_for

__all__ = ["rotate"]


@click.group(epilog=examples(
    "coder-migrate rotate provisioner-psk -i inventories/prod",
))
def rotate() -> None:
    """Rotate a deployment-wide secret."""


@rotate.command("provisioner-psk", epilog=examples(
    "coder-migrate rotate provisioner-psk -i inventories/prod",
    "coder-migrate rotate provisioner-psk -i inventories/prod --auto-approve",
))
@inventory_option
@auto_approve_option
@gate_timeout_option
@lock_wait_option
def provisioner_psk(
    inventory_dir: click.Path, auto_approve: bool, gate_timeout: float, lock_wait: float
) -> None:
    """A new provisioner pre-shared key, in waves: staged on the primary, taken by the primary,
    copied to every region whose provisioners then roll, the staged copy dropped. Resumable:
    a run killed mid-way is finished by running it again (the staged key is kept)."""
    from pathlib import Path

    engine = _engine(Path(str(inventory_dir)))
    result, report = run_apply(
        engine, scope_for(()), compute=compute_rotation, execute=apply_rotation, saved=None,
        plan_file=None, auto_approve=auto_approve, force=False, gate_timeout=gate_timeout,
        lock_wait=lock_wait,
    )
    if result.is_empty:
        console.print("No changes.")
        return
    console.print(f"Rotation complete: {len(report.done)} change(s) in run {report.run}.")
