"""GeoDNS for the engine: desired rrsets from the inventory, ownership, plan, apply, verify,
restore.

The engine calls :func:`plan_dns` (observe + desired + diff, nothing changed),
:func:`apply_dns_changes`, :func:`raise_unless_verified` (the verify step that ends the DNS
wave: the gate of the ``DnsRRSet`` change kind in :mod:`.rrset_change`) and
:func:`restore_dns_changes` (rollback from the ``before`` snapshots in the journal).
Adapters live in :mod:`coder_migrate.providers.dns`. Modules here may import
``engine.change``, ``engine.guide``, ``inventory``, ``providers``, ``errors``, ``poll`` and
``tasks``; never the rest of the engine.
"""

from coder_migrate.dns.check import (
    CheckReport,
    CheckResult,
    Expectation,
    check_dns,
    ecs_query,
    expectations,
)
from coder_migrate.dns.desired import DesiredRRSet, DesiredState, GeoOptions, desired_state
from coder_migrate.dns.ownership import marker_name, marker_rrset, parse_marker
from coder_migrate.dns.plan import (
    KIND,
    MAX_SAFE_CHANGE_FRACTION,
    DnsPlan,
    apply_dns_changes,
    diff_rrsets,
    open_adapter,
    plan_dns,
    restore_dns_changes,
)
from coder_migrate.dns.verify import VerifyOutcome, raise_unless_verified, verify_dns

__all__ = [
    "KIND",
    "MAX_SAFE_CHANGE_FRACTION",
    "CheckReport",
    "CheckResult",
    "DesiredRRSet",
    "DesiredState",
    "DnsPlan",
    "Expectation",
    "GeoOptions",
    "VerifyOutcome",
    "apply_dns_changes",
    "check_dns",
    "desired_state",
    "diff_rrsets",
    "ecs_query",
    "expectations",
    "marker_name",
    "marker_rrset",
    "open_adapter",
    "parse_marker",
    "plan_dns",
    "raise_unless_verified",
    "restore_dns_changes",
    "verify_dns",
]
