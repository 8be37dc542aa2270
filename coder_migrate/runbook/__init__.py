"""Region rollout runbooks for the people on call, generated from the migration's own planner.

:func:`render_runbook` plans the migration for an assumed pre-migration world
(:mod:`coder_migrate.runbook.assumed`) with the planner ``migrate apply`` uses, then lays it
out per region from ``templates/runbook/`` (markdown or html), with checks, estimates and the
rollback of each step, in each change kind's own words (its ``guide()``,
:mod:`coder_migrate.runbook.steps`). See docs/runbook.md. Modules here may import
``engine``, ``migrations``, ``dns``, ``inventory`` and ``errors``; never ``cli``.
"""

from __future__ import annotations

from coder_migrate.runbook.assumed import ASSUMPTIONS, assumed_plan, assumed_world
from coder_migrate.runbook.render import FORMATS, Runbook, build_runbook, render_runbook

__all__ = [
    "ASSUMPTIONS",
    "FORMATS",
    "Runbook",
    "assumed_plan",
    "assumed_world",
    "build_runbook",
    "render_runbook",
]
