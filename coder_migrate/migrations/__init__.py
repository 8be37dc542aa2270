"""Migrations between Coder versions, planned and applied through the deploy engine.

Each migration is a package (``v1_20_to_v1_21/``): one module per job (observe, preflight,
plan, rollback, status) and one per step it adds, each step a change kind listed in
``coder_migrate/kinds.py``, so ``apply``, the journal, the lock and the gates are the
engine's own. Modules here may import ``engine``, ``dns``, ``inventory``, ``providers``,
``errors``, ``poll`` and ``tasks``; never ``cli`` or ``runbook``. :mod:`.site` runs one
inventory host's migration for the Ansible role ``coder_migration``.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS = ("v1.20-to-v1.21",)
"""Migration names ``plan --migration`` / ``apply --migration`` accept."""
