"""Migrations between Coder versions, planned and applied through the deploy engine.

Each migration module plans typed changes (:class:`coder_migrate.engine.plan.Change`) in the
same waves as a deploy and registers executors for the kinds only it plans, so ``apply``,
the journal, the lock and the health gates are the deploy engine's own.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS = ("v1.20-to-v1.21",)
"""Migration names ``plan --migration`` / ``apply --migration`` accept."""
