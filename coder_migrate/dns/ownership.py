"""Ownership markers: which rrsets in a shared zone coder-migrate may change.

Every rrset the toolkit owns has a companion TXT rrset, one per owned (name, type):

    _coder-migrate-<type>.<name>            for a name such as coder-eu-west.example.com
    _coder-migrate-wildcard-<type>.<parent> for a wildcard *.<parent>

with the single record ``"heritage=coder-migrate,owner=<owner>,rrset=<TYPE> <name>"``
(``<type>`` lowercased in the marker's label). The marker is one label below the owned name's
parent, so it never turns a dev-URL host into an empty non-terminal that would hide the
wildcard. ``<owner>`` is the deployment's shared hostname unless given: one Coder deployment
per shared hostname, so two deployments (or environments) can share a zone without touching
each other's records, as external-dns' TXT registry does. A marker whose name, heritage,
owner or rrset does not match exactly is not ours, and neither is the rrset it points at.
"""

from __future__ import annotations

from dataclasses import dataclass

from coder_migrate.errors import PlanError
from coder_migrate.providers.dns.base import RRSet, RRSetKey

__all__ = [
    "HERITAGE",
    "MARKER_PREFIX",
    "Marker",
    "marker_name",
    "marker_rrset",
    "parse_marker",
]

HERITAGE = "coder-migrate"
MARKER_PREFIX = "_coder-migrate-"
MAX_TXT_STRING = 255  # one TXT character-string; a longer marker would be split and unreadable


def marker_name(key: RRSetKey) -> str:
    """The name of the TXT marker that claims the rrset *key*."""
    name, rtype = key
    label = rtype.lower()
    if name.startswith("*."):
        return f"{MARKER_PREFIX}wildcard-{label}.{name[2:]}"
    return f"{MARKER_PREFIX}{label}.{name}"


def _text(owner: str, key: RRSetKey) -> str:
    name, rtype = key
    return f"heritage={HERITAGE},owner={owner},rrset={rtype} {name}"


def marker_rrset(key: RRSetKey, *, owner: str, ttl: int) -> RRSet:
    """The marker that claims *key* for *owner*; PlanError when it cannot be one string."""
    text = _text(owner, key)
    if len(text) > MAX_TXT_STRING:
        raise PlanError(
            f"{key[1]} {key[0]}: name too long for an ownership marker ({len(text)} characters "
            f"of TXT, at most {MAX_TXT_STRING}); expected a shorter hostname or owner"
        )
    return RRSet(name=marker_name(key), type="TXT", ttl=ttl, records=(f'"{text}"',))


@dataclass(frozen=True)
class Marker:
    """A parsed coder-migrate marker: who owns which rrset."""

    owner: str
    target: RRSetKey
    rrset: RRSet


def parse_marker(rrset: RRSet) -> Marker | None:
    """The marker *rrset* is, if it is a well-formed coder-migrate marker; else None."""
    if rrset.type != "TXT" or not rrset.name.startswith(MARKER_PREFIX) or len(rrset.records) != 1:
        return None
    content = rrset.records[0]
    if len(content) < 2 or content[0] != '"' or content[-1] != '"':
        return None
    fields: dict[str, str] = {}
    for part in content[1:-1].split(","):
        key, sep, value = part.partition("=")
        if not sep or key in fields:
            return None
        fields[key] = value
    if set(fields) != {"heritage", "owner", "rrset"} or fields["heritage"] != HERITAGE:
        return None
    rtype, _, name = fields["rrset"].partition(" ")
    target = (name, rtype)
    if not rtype or not name or marker_name(target) != rrset.name:
        return None
    return Marker(owner=fields["owner"], target=target, rrset=rrset)
