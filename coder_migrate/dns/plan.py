"""The DNS part of a plan: desired rrsets against observed ones, as ``DnsRRSet`` changes.

Rules, in the order they are applied:

- Only rrsets with our marker (:mod:`coder_migrate.dns.ownership`) are ever updated or
  deleted. A wanted rrset that exists without our marker, or that another coder-migrate owner
  has marked, or that would sit beside someone else's CNAME or address records at the same
  name, is left as it is: the plan lists it as ``keep`` with the reason. Other rrsets at
  names we manage are listed as ``keep`` too, so the reader sees they were considered.
- Each change carries the rrset as observed (``before``: the snapshot restored on
  rollback) and as wanted (``after``). Markers are written before the rrset they claim and
  removed after it, so an interrupted apply never leaves an owned rrset without its marker.
- Updating or deleting more than 30% of the owned rrsets (markers not counted) in a zone
  where the deployment owns at least ``coder_dns.threshold_min_rrsets`` (10, octoDNS'
  ``MIN_EXISTING_RECORDS``), or touching NS or SOA, needs ``--force``: those changes carry
  ``needs_force`` and :meth:`coder_migrate.engine.plan.Plan.raise_if_unsafe` refuses them
  without it.

Applying re-observes the zone once and checks, per change, that the rrset is still what the
plan saw (already-applied changes are skipped, so a resumed apply converges); rollback puts
the ``before`` snapshots back in reverse order under the same check.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

from coder_migrate.dns.desired import DesiredRRSet, DesiredState, GeoOptions, desired_state
from coder_migrate.dns.ownership import Marker, marker_name, marker_rrset, parse_marker
from coder_migrate.dns.rrset_change import (
    KIND,
    DnsRRSetChange,
    apply_dns_changes,
    describe_records,
    open_adapter,
    restore_dns_changes,
)
from coder_migrate.engine.change import Action
from coder_migrate.errors import UnsafePlan
from coder_migrate.inventory.model import Topology
from coder_migrate.providers.dns.base import DnsAdapter, RRSet, RRSetKey

__all__ = [
    "KIND",
    "MAX_SAFE_CHANGE_FRACTION",
    "MIN_OWNED_FOR_THRESHOLD",
    "DnsPlan",
    "DnsRRSetChange",
    "apply_dns_changes",
    "describe_records",
    "diff_rrsets",
    "open_adapter",
    "plan_dns",
    "restore_dns_changes",
]

MAX_SAFE_CHANGE_FRACTION = 0.30
MIN_OWNED_FOR_THRESHOLD = 10
"""Below this many owned rrsets the fraction rule does not apply: one region's update in a
three-region zone is a third of it (octoDNS: ``MIN_EXISTING_RECORDS``)."""
PROTECTED_TYPES = frozenset({"NS", "SOA"})
# Types that cannot share a name with each other when the owners differ: a CNAME excludes
# everything, and two parties answering addresses for one name would fight.
_ADDRESS_TYPES = frozenset({"A", "AAAA", "LUA", "CNAME", "GEO"})


@dataclass(frozen=True)
class DnsPlan:
    """The DNS changes of one zone and what the reader must know about them."""

    zone: str
    provider: str
    changes: tuple[DnsRRSetChange, ...]
    notes: tuple[str, ...]

    @property
    def effective(self) -> tuple[DnsRRSetChange, ...]:
        return tuple(c for c in self.changes if c.action is not Action.KEEP)

    @property
    def is_empty(self) -> bool:
        return not self.effective

    def raise_if_unsafe(self, *, force: bool) -> None:
        if force:
            return
        unsafe = [c for c in self.effective if c.needs_force]
        if unsafe:
            raise UnsafePlan(
                f"{len(unsafe)} DNS change(s) need --force: "
                + "; ".join(c.summary() for c in unsafe)
            )


def _diff(before: RRSet | None, after: RRSet | None) -> str:
    old = before.lines() if before else []
    new = after.lines() if after else []
    return "\n".join(difflib.unified_diff(old, new, "observed", "planned", lineterm="", n=0))


def _change(
    *,
    region: str,
    before: RRSet | None,
    after: RRSet | None,
    reason: str,
    action: Action | None = None,
    depends_on: tuple[str, ...] = (),
) -> DnsRRSetChange:
    rrset = after or before
    assert rrset is not None
    if action is None:
        action = (
            Action.CREATE if before is None else Action.DELETE if after is None else Action.UPDATE
        )
    return DnsRRSetChange(
        id=f"{region}/{KIND}/{rrset.type}/{rrset.name}",
        region=region,
        action=action,
        target=f"{rrset.type} {rrset.name}",
        reason=reason,
        before=before,
        after=after,
        diff="" if action is Action.KEEP else _diff(before, after),
        needs_force=action is not Action.KEEP and rrset.type in PROTECTED_TYPES,
        depends_on=depends_on,
    )


@dataclass
class _Diff:
    """What :func:`diff_rrsets` collects, in the order apply must follow."""

    desired: DesiredState
    current: dict[RRSetKey, RRSet]
    ours: dict[RRSetKey, Marker] = field(default_factory=dict)
    others: dict[RRSetKey, Marker] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    markers_first: list[DnsRRSetChange] = field(default_factory=list)
    data: list[DnsRRSetChange] = field(default_factory=list)
    deletes: list[DnsRRSetChange] = field(default_factory=list)
    markers_last: list[DnsRRSetChange] = field(default_factory=list)
    keeps: list[DnsRRSetChange] = field(default_factory=list)
    kept_keys: set[RRSetKey] = field(default_factory=set)


def diff_rrsets(desired: DesiredState, observed: Iterable[RRSet], *, provider: str) -> DnsPlan:
    """Changes that turn *observed* into *desired* without touching what is not ours."""
    diff = _Diff(desired, {r.key: r for r in observed}, notes=list(desired.notes))
    for rrset in diff.current.values():
        marker = parse_marker(rrset)
        if marker is not None:
            (diff.ours if marker.owner == desired.owner else diff.others)[marker.target] = marker
    order = {name: index for index, name in enumerate(desired.regions)}
    wanted = sorted(desired.by_key().items(),
                    key=lambda kv: (order.get(kv[1].region, 99), kv[0]))
    for key, want in wanted:
        _diff_wanted(diff, key, want)
    _diff_unwanted(diff)
    _keep_foreign(diff)
    changes = [*diff.markers_first, *diff.data, *diff.deletes, *diff.markers_last]
    changes = _apply_threshold(
        changes, owned=len([k for k in diff.ours if k in diff.current]), notes=diff.notes,
        min_owned=desired.threshold_min_rrsets,
    )
    return DnsPlan(zone=desired.zone, provider=provider, changes=(*changes, *diff.keeps),
                   notes=tuple(diff.notes))


def _diff_wanted(diff: _Diff, key: RRSetKey, want: DesiredRRSet) -> None:
    """A wanted rrset: its marker first, then the rrset; or kept, with the reason."""
    name, rtype = key
    have = diff.current.get(key)
    blocker = _blocker(key, diff.current, diff.ours, diff.others)
    if blocker:
        diff.keeps.append(_change(
            region=want.region, before=have, after=want.rrset, action=Action.KEEP,
            reason=f"left as it is: {blocker} ({want.purpose} not applied)",
        ))
        diff.notes.append(f"{rtype} {name} was not changed: {blocker}")
        diff.kept_keys.add(key)
        return
    marker_want = marker_rrset(key, owner=diff.desired.owner, ttl=diff.desired.ttl)
    marker_have = diff.current.get(marker_want.key)
    marker_id: tuple[str, ...] = ()
    if marker_have != marker_want:
        change = _change(region=want.region, before=marker_have, after=marker_want,
                         reason=f"ownership marker of {rtype} {name}")
        diff.markers_first.append(change)
        marker_id = (change.id,)
    if have != want.rrset:
        diff.data.append(_change(region=want.region, before=have, after=want.rrset,
                                 reason=want.purpose, depends_on=marker_id))


def _diff_unwanted(diff: _Diff) -> None:
    """Owned rrsets the inventory no longer asks for: the rrset, then its marker."""
    wanted = diff.desired.by_key()
    for key, marker in sorted(diff.ours.items()):
        if key in wanted:
            continue
        region = diff.desired.primary
        have = diff.current.get(key)
        depends: tuple[str, ...] = ()
        if have is not None:
            change = _change(region=region, before=have, after=None,
                             reason="owned by this deployment and no longer in the inventory")
            diff.deletes.append(change)
            depends = (change.id,)
        diff.markers_last.append(_change(
            region=region, before=marker.rrset, after=None,
            reason=f"ownership marker of {key[1]} {key[0]}, which is gone", depends_on=depends,
        ))


def _keep_foreign(diff: _Diff) -> None:
    """rrsets without our marker at names we manage: listed as kept, never touched."""
    region_at = {key[0]: d.region for key, d in diff.desired.by_key().items()}
    our_markers = {(marker_name(key), "TXT") for key in diff.ours}
    foreign = [rrset for key, rrset in sorted(diff.current.items())
               if key not in diff.ours and key not in our_markers]
    for rrset in foreign:
        if rrset.name in region_at and rrset.key not in diff.kept_keys:
            diff.keeps.append(_change(
                region=region_at[rrset.name], before=rrset, after=rrset, action=Action.KEEP,
                reason="not owned by coder-migrate (no marker): left as it is",
            ))
    if foreign:
        diff.notes.append(
            f"rrsets in zone {diff.desired.zone} without a coder-migrate marker of owner "
            f"{diff.desired.owner} are never changed or deleted"
        )


def _blocker(
    key: RRSetKey,
    current: dict[RRSetKey, RRSet],
    ours: dict[RRSetKey, Marker],
    others: dict[RRSetKey, Marker],
) -> str:
    """Why the wanted rrset *key* may not be written, or '' when it may."""
    name, rtype = key
    if key in others:
        return f"owned by another coder-migrate deployment ({others[key].owner})"
    if key in ours:
        return ""
    if key in current:
        return "it exists without our ownership marker"
    marker = current.get((marker_name(key), "TXT"))
    if marker is not None and parse_marker(marker) is None:
        return f"{marker_name(key)} holds a TXT record that is not our marker"
    if rtype in _ADDRESS_TYPES:
        for (other_name, other_type), _ in current.items():
            if other_name == name and other_type in _ADDRESS_TYPES and (
                (other_name, other_type) not in ours
            ):
                return f"{other_type} {name} exists without our ownership marker"
    return ""


def _apply_threshold(
    changes: list[DnsRRSetChange], *, owned: int, notes: list[str], min_owned: int
) -> list[DnsRRSetChange]:
    touched = [
        c for c in changes
        if c.action in (Action.UPDATE, Action.DELETE) and parse_marker_change(c) is False
    ]
    if not owned or owned < min_owned or len(touched) / owned <= MAX_SAFE_CHANGE_FRACTION:
        return changes
    share = f"{len(touched)} of {owned} owned rrsets"
    notes.append(
        f"this plan updates or deletes {share} (more than "
        f"{MAX_SAFE_CHANGE_FRACTION:.0%}): it applies only with --force"
    )
    flagged = {c.id for c in touched}
    marker_ids = {
        c.id for c in changes
        if c.action in (Action.UPDATE, Action.DELETE) and parse_marker_change(c) is True
    }
    flagged |= marker_ids
    return [
        c.model_copy(update={"needs_force": True, "reason": f"{c.reason} [{share}: --force]"})
        if c.id in flagged else c
        for c in changes
    ]


def parse_marker_change(change: DnsRRSetChange) -> bool:
    """Whether *change* is about an ownership marker rather than a served rrset."""
    rrset = change.after or change.before
    return rrset is not None and parse_marker(rrset) is not None


# -- engine entry points ---------------------------------------------------------------------


async def plan_dns(
    topology: Topology, adapter: DnsAdapter, options: GeoOptions | None = None
) -> DnsPlan:
    """Observe the zone and compute its changes; nothing is changed."""
    capabilities = await adapter.capabilities()
    desired = desired_state(topology, capabilities, options)
    observed = await adapter.observe()
    return diff_rrsets(desired, observed, provider=capabilities.provider)
