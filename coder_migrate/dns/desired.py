"""The rrsets an inventory asks for, on a provider with given capabilities.

For each site (the primary and every region) with ``coder_dns_targets``:

- ``A``/``AAAA`` for its DNS name (``Region.dns_name``: ``coder_hostname``, else the access
  URL's host), unless that name is the shared hostname;
- ``A``/``AAAA`` for its wildcard (``coder_wildcard_host``, else ``*.<name>``) for dev URLs
  and subdomain apps;

and for the shared hostname (``coder_dns.shared_hostname``):

- with LUA records (PowerDNS): one ``LUA`` rrset answering with the nearest healthy region
  (:mod:`coder_migrate.dns.lua`), falling back to the primary's targets;
- without: a plain ``A``/``AAAA`` rrset with every site's targets, and a plan note saying that
  geo routing is not available on this provider.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from coder_migrate.dns.lua import HealthCheck, LuaRegion, family, health_url, shared_record_script
from coder_migrate.errors import PlanError
from coder_migrate.inventory.model import Primary, Region, Topology
from coder_migrate.inventory.rules import cross_field_findings
from coder_migrate.providers.dns.base import Capabilities, RRSet, RRSetKey, relative_to_zone

__all__ = [
    "DesiredRRSet",
    "DesiredState",
    "GeoOptions",
    "desired_state",
    "fallback_targets",
    "split_by_family",
]

PRIMARY = "primary"


@dataclass(frozen=True)
class GeoOptions:
    """How the shared hostname routes. ``geoip=None``: use it when the server has it."""

    geoip: bool | None = None
    health_check: HealthCheck = "url"
    health_path: str = "/healthz"
    owner: str | None = None
    """Owner id written into markers; default: the shared hostname."""


@dataclass(frozen=True)
class DesiredRRSet:
    rrset: RRSet
    region: str
    """``primary`` or the region whose records these are (plan waves group by it)."""
    purpose: str
    """Why the rrset exists, for the plan's reason column."""


@dataclass(frozen=True)
class DesiredState:
    zone: str
    owner: str
    ttl: int
    rrsets: tuple[DesiredRRSet, ...]
    notes: tuple[str, ...] = ()
    regions: tuple[str, ...] = field(default=())
    """``primary`` then the regions in inventory order: the order changes are listed in."""

    def by_key(self) -> dict[RRSetKey, DesiredRRSet]:
        return {d.rrset.key: d for d in self.rrsets}


def split_by_family(targets: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``{"A": (...), "AAAA": (...)}``, sorted and without duplicates; empty families left out."""
    by_family: dict[str, list[str]] = {"A": [], "AAAA": []}
    for address in targets:
        by_family[family(address)].append(address)
    return {k: tuple(sorted(set(v))) for k, v in by_family.items() if v}


def _site_rrsets(
    site: Primary | Region, shared: str, ttl: int, region: str
) -> Iterator[DesiredRRSet]:
    name = site.dns_name
    wildcard = site.wildcard_host or (f"*.{name}" if name else None)
    for rtype, targets in split_by_family(site.dns_targets).items():
        if name and name != shared:
            yield DesiredRRSet(
                RRSet(name=name, type=rtype, ttl=ttl, records=targets), region,
                f"{site.name}'s own hostname",
            )
        if wildcard:
            yield DesiredRRSet(
                RRSet(name=wildcard, type=rtype, ttl=ttl, records=targets), region,
                f"{site.name}'s dev URLs and apps",
            )


def fallback_targets(topology: Topology, rtype: str) -> tuple[str, ...]:
    """What the shared hostname answers when no region may: the primary's targets, else every
    region's (a primary without addresses of this family)."""
    return split_by_family(topology.primary.dns_targets).get(rtype) or tuple(
        sorted({a for r in topology.regions for a in split_by_family(r.dns_targets).get(rtype, ())})
    )


def _check_names(topology: Topology, rrsets: Iterable[DesiredRRSet]) -> None:
    zone = topology.dns.zone
    seen: dict[RRSetKey, str] = {}
    for desired in rrsets:
        name = desired.rrset.name.removeprefix("*.")
        if not relative_to_zone(name, zone):
            raise PlanError(
                f"{desired.region}: DNS name {desired.rrset.name} is outside the zone {zone}; "
                "expected a hostname under coder_dns.zone"
            )
        key = desired.rrset.key
        if key in seen and seen[key] != desired.region:
            raise PlanError(
                f"{desired.region}: {key[1]} {key[0]} is also wanted by {seen[key]}; "
                "expected a hostname per site"
            )
        seen[key] = desired.region


_DNS_KEYS = (
    "coder_geo.subnets",
    "coder_geo.test_subnets",
    "coder_dns.shared_hostname",
    "coder_hostname",
    "coder_access_url",
    "coder_wildcard_host",
)


def _check_inventory(topology: Topology) -> None:
    """The inventory's own rules that DNS relies on (a Topology may be built without them)."""
    for finding in cross_field_findings(topology):
        if finding.key in _DNS_KEYS:
            raise PlanError(
                f"{finding.owner}: {finding.key}: expected {finding.expected}, "
                f"found {finding.found}"
            )


def desired_state(
    topology: Topology, capabilities: Capabilities, options: GeoOptions | None = None
) -> DesiredState:
    """Every rrset (without markers) the inventory asks for on this provider."""
    options = options or GeoOptions()
    _check_inventory(topology)
    dns = topology.dns
    shared, ttl = dns.shared_hostname, dns.ttl
    owner = options.owner or shared
    notes: list[str] = []
    rrsets: list[DesiredRRSet] = list(_site_rrsets(topology.primary, shared, ttl, PRIMARY))
    for region in topology.regions:
        region_rrsets = list(_site_rrsets(region, shared, ttl, region.name))
        if not region_rrsets:
            notes.append(f"{region.name} has no coder_dns_targets: no DNS records for it")
        rrsets.extend(region_rrsets)

    geo_wanted = any(
        r.geo.subnets or r.geo.countries or r.geo.continents for r in topology.regions
    )
    if capabilities.lua_records:
        geoip = capabilities.geoip if options.geoip is None else options.geoip
        if options.geoip and not capabilities.geoip:
            notes.append(
                f"the {capabilities.provider} server has no GeoIP database loaded; "
                "country and continent rules will match nothing"
            )
        if not capabilities.client_subnet:
            notes.append(
                f"the {capabilities.provider} server ignores EDNS Client Subnet: "
                "clients are placed by their resolver's address"
            )
        if not geoip and any(r.geo.countries or r.geo.continents for r in topology.regions):
            notes.append(
                "country and continent routing is off (no GeoIP database): "
                "only coder_geo.subnets route to a region"
            )
        records = []
        for rtype in ("A", "AAAA"):
            fallback = fallback_targets(topology, rtype)
            regions = [
                LuaRegion(
                    name=r.name,
                    targets=split_by_family(r.dns_targets).get(rtype, ()),
                    subnets=r.geo.subnets,
                    countries=r.geo.countries,
                    continents=r.geo.continents,
                    health_url=health_url(r.access_url, r.dns_name or "", options.health_path),
                )
                for r in topology.regions
            ]
            if not fallback:
                continue
            script = shared_record_script(
                regions, fallback, geoip=geoip, health_check=options.health_check
            )
            records.append(f'{rtype} "{script}"')
        if records:
            rrsets.append(
                DesiredRRSet(
                    RRSet(name=shared, type="LUA", ttl=ttl, records=tuple(records)), PRIMARY,
                    "shared hostname: the nearest healthy region, else the primary",
                )
            )
    else:
        if geo_wanted:
            notes.append(
                f"geo routing is not available on provider {capabilities.provider}: "
                f"{shared} answers every deployment's addresses to every client"
            )
        every = [
            *topology.primary.dns_targets,
            *(a for r in topology.regions for a in r.dns_targets),
        ]
        for rtype, targets in split_by_family(every).items():
            rrsets.append(
                DesiredRRSet(
                    RRSet(name=shared, type=rtype, ttl=ttl, records=targets), PRIMARY,
                    "shared hostname: every deployment (no geo routing on this provider)",
                )
            )
    _check_names(topology, rrsets)
    return DesiredState(
        zone=dns.zone,
        owner=owner,
        ttl=ttl,
        rrsets=tuple(rrsets),
        notes=tuple(notes),
        regions=(PRIMARY, *(r.name for r in topology.regions)),
    )
