"""The inventory's groups, as ``ansible-inventory --list`` gives them: which host is the
primary, which hosts are regions, and the layouts that would make coder-migrate read less than
the user wrote (a misspelt group, a host outside every coder group, no region at all).

Each finding names the host or group, the key (``group``, ``hosts``, ``inventory_hostname``
or ``group_names``), what was expected and what was found; the loader adds the file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from coder_migrate.inventory.rules import Finding

__all__ = ["PRIMARY_GROUP", "PROXY_HOSTS_GROUP", "REGIONS_GROUP", "Layout", "group_hosts",
           "read_layout"]

PRIMARY_GROUP = "coder_primary"
REGIONS_GROUP = "coder_regions"
PROXY_HOSTS_GROUP = "coder_proxy_hosts"
"""Hosts that run the bundled proxy on a VM (playbooks/proxy_hosts.yml)."""
_KNOWN_GROUPS = (PRIMARY_GROUP, REGIONS_GROUP, PROXY_HOSTS_GROUP)
# Settings that only ever describe one site: a host outside the coder groups that sets one
# was meant to be a site (its group is misspelt or missing).
_SITE_ONLY_KEYS = ("coder_access_url", "coder_region_display_name")
_HOST_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Layout:
    primary: str | None
    """The one host of coder_primary, if there is exactly one."""
    regions: list[str]
    """Hosts of coder_regions (and its child groups), in inventory order."""
    findings: list[Finding]


def read_layout(data: Mapping[str, Any]) -> Layout:
    primaries = group_hosts(data, PRIMARY_GROUP)
    regions = group_hosts(data, REGIONS_GROUP)
    read = {*primaries, *regions, *group_hosts(data, PROXY_HOSTS_GROUP)}
    findings = [
        *_misspelt_groups(data, read),
        *_sites_outside_the_groups(data, read),
        *_group_sizes(primaries, regions),
        *_host_names([*primaries, *regions]),
    ]
    primary = primaries[0] if len(primaries) == 1 else None
    return Layout(primary=primary, regions=regions, findings=findings)


def group_hosts(data: Mapping[str, Any], group: str) -> list[str]:
    """Hosts of *group* including its child groups, in inventory order."""
    hosts: list[str] = []
    pending, seen = [group], set()
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        entry = _mapping(data.get(name))
        for host in _strings(entry.get("hosts")):
            if host not in hosts:
                hosts.append(host)
        pending.extend(_strings(entry.get("children")))
    return hosts


def _groups(data: Mapping[str, Any]) -> list[str]:
    return [name for name in data if name != "_meta" and isinstance(name, str)]


def _misspelt_groups(data: Mapping[str, Any], read: set[str]) -> Iterator[Finding]:
    """A ``coder_*`` group whose hosts coder-migrate does not read is a misspelt name."""
    for group in _groups(data):
        if not group.startswith("coder_") or group in _KNOWN_GROUPS:
            continue
        ignored = [host for host in group_hosts(data, group) if host not in read]
        if not ignored:
            continue  # a child group of a known group, or empty
        close = difflib.get_close_matches(group, _KNOWN_GROUPS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        yield Finding(
            group, "group",
            f"one of {', '.join(_KNOWN_GROUPS)} (or a child group of one){hint}",
            f"{group}, whose hosts coder-migrate would ignore ({', '.join(ignored)})",
        )


def _sites_outside_the_groups(data: Mapping[str, Any], read: set[str]) -> Iterator[Finding]:
    hostvars = _mapping(_mapping(data.get("_meta")).get("hostvars"))
    for host, variables in hostvars.items():
        if host in read or not isinstance(variables, Mapping):
            continue
        keys = [key for key in _SITE_ONLY_KEYS if key in variables]
        if keys:
            yield Finding(
                str(host), "group_names",
                f"a host in {PRIMARY_GROUP} or {REGIONS_GROUP} (it sets {keys[0]}, and "
                "coder-migrate reads only the hosts of these groups)",
                "a host in neither",
            )


def _group_sizes(primaries: list[str], regions: list[str]) -> Iterator[Finding]:
    if len(primaries) != 1:
        yield Finding(
            PRIMARY_GROUP, "hosts", f"exactly one host in group {PRIMARY_GROUP}",
            f"{len(primaries)} ({', '.join(primaries) or 'none'})",
        )
    if not regions:
        yield Finding(
            REGIONS_GROUP, "hosts", f"at least one host in group {REGIONS_GROUP} (one per region)",
            "none",
        )
    for name in regions:
        if name in primaries:
            yield Finding(
                name, "group_names",
                f"a host in only one of {PRIMARY_GROUP} and {REGIONS_GROUP}", "both",
            )


def _host_names(names: list[str]) -> Iterator[Finding]:
    for name in names:
        if not _HOST_NAME_RE.match(name):
            yield Finding(
                name, "inventory_hostname",
                "a host name of lowercase letters, digits and '-' (at most 63; it names the "
                "site in Coder, in change ids and in --limit)",
                repr(name),
            )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []
