"""The probe: synthetic users who stay online while an operation runs ("users stay online").

:mod:`.users` runs them (one per region, on its test workspace's app, through the address
users use); :mod:`.report` turns what they saw into the report (``N failed`` per region and
in total, the longest gap, p50/p99 latency before, during and after, the step of each
failure). ``coder-migrate probe`` runs it alone; ``--probe`` runs it around ``apply
--migration``, ``migrate apply`` and ``rollback --migration``.
"""

from coder_migrate.probe.report import ProbeReport, StepLog, build_report
from coder_migrate.probe.users import ProbeRun, targets_of

__all__ = ["ProbeReport", "ProbeRun", "StepLog", "build_report", "targets_of"]
