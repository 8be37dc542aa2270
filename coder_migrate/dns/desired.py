"""The rrsets an inventory asks for, on a provider with given capabilities.

For each site (the primary and every region) with ``coder_dns_targets``:

- ``A``/``AAAA`` for its DNS name (``Region.dns_name``: ``coder_hostname``, else the access
  URL's host), unless that name is the shared hostname;
- ``A``/``AAAA`` for its wildcard (``coder_wildcard_host``, else ``*.<name>``) for dev URLs
  and subdomain apps;

and for the shared hostname (``coder_dns.shared_hostname``):

- not geo-routed (v2 by default: workspace proxies serve neither the dashboard nor the API,
  so users open the primary): a plain ``A``/``AAAA`` rrset with the primary's targets;
- geo-routed (v1 by default) with LUA records (PowerDNS): one ``LUA`` rrset answering with the
  nearest healthy region (:mod:`coder_migrate.dns.lua`), falling back to the primary's targets;
- geo-routed without: a plain ``A``/``AAAA`` rrset with every site's targets, and a plan note
  saying that geo routing is not available on this provider.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from coder_migrate.dns.lua import HealthCheck, LuaRegion, family, health_url, shared_record_script
from coder_migrate.errors import PlanError
from coder_migrate.inventory.model import Primary, Region, Topology
from coder_migrate.inventory.rules import cross_field_findings
from coder_migrate.providers.coder.health import health_path
from coder_migrate.providers.dns.base import Capabilities, RRSet, RRSetKey, relative_to_zone
from coder_migrate.providers.dns.route53 import (
    DEFAULT_LOCATION,
    GEO_TYPE,
    GeoRecord,
    check_config,
    check_url,
)

__all__ = [
    "DesiredRRSet",
    "DesiredState",
    "GeoOptions",
    "desired_state",
    "fallback_targets",
    "split_by_family",
]

@dataclass(frozen=True)
class GeoOptions:
    """How the shared hostname routes. ``geoip=None``: use it when the server has it."""

    geoip: bool | None = None
    health_check: HealthCheck = "url"
    health_path: str | None = None
    """Path the health checks probe; default: what the generation's server serves
    (:mod:`coder_migrate.providers.coder.health`)."""
    owner: str | None = None
    """Owner id written into markers; default: the shared hostname."""


@dataclass(frozen=True)
class DesiredRRSet:
    rrset: RRSet
    region: str
    """The primary's host name or the region whose records these are (waves group by it)."""
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
    """The primary's host name, then the regions in inventory order: the order changes are
    listed in."""
    threshold_min_rrsets: int = 10
    """The update/delete threshold applies from this many owned rrsets on."""

    @property
    def primary(self) -> str:
        """The primary's host name: the site the shared names belong to."""
        return self.regions[0]

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
    notes: list[str] = []
    primary = topology.primary.name
    rrsets: list[DesiredRRSet] = list(_site_rrsets(topology.primary, shared, ttl, primary))
    for region in topology.regions:
        region_rrsets = list(_site_rrsets(region, shared, ttl, region.name))
        if not region_rrsets:
            notes.append(f"{region.name} has no coder_dns_targets: no DNS records for it")
        rrsets.extend(region_rrsets)
    if not topology.geo_routed:
        rrsets.extend(_shared_to_primary(topology))
        notes.append(
            f"{shared} is not geo-routed ({topology.generation}"
            f"{', coder_dns.geo_routing: false' if dns.geo_routing is False else ''}): "
            "it answers the primary; each region has its own hostname and wildcard"
        )
    elif capabilities.lua_records:
        rrsets.extend(_shared_lua(topology, capabilities, options, notes))
    elif capabilities.geolocation:
        rrsets.extend(_shared_geolocation(topology, options, notes))
    else:
        rrsets.extend(_shared_everywhere(topology, capabilities, notes))
    _check_names(topology, rrsets)
    return DesiredState(
        zone=dns.zone,
        owner=options.owner or shared,
        ttl=ttl,
        rrsets=tuple(rrsets),
        notes=tuple(notes),
        regions=(primary, *(r.name for r in topology.regions)),
        threshold_min_rrsets=dns.threshold_min_rrsets,
    )


def _shared_to_primary(topology: Topology) -> Iterator[DesiredRRSet]:
    """v2 (and v1 with geo routing off): the shared hostname is the primary's, like its own
    name; the dashboard picks a workspace proxy, DNS does not (seeds 003 and 004)."""
    dns = topology.dns
    for rtype in ("A", "AAAA"):
        targets = fallback_targets(topology, rtype)
        if targets:
            yield DesiredRRSet(
                RRSet(name=dns.shared_hostname, type=rtype, ttl=dns.ttl, records=targets),
                topology.primary.name, "shared hostname: the primary (not geo-routed)",
            )


def _lua_notes(topology: Topology, capabilities: Capabilities, options: GeoOptions) -> list[str]:
    notes: list[str] = []
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
    return notes


def _shared_lua(
    topology: Topology, capabilities: Capabilities, options: GeoOptions, notes: list[str]
) -> Iterator[DesiredRRSet]:
    """PowerDNS: one LUA rrset, the nearest healthy region, else the primary."""
    notes.extend(_lua_notes(topology, capabilities, options))
    geoip = capabilities.geoip if options.geoip is None else options.geoip
    path = options.health_path or health_path(topology.generation)
    records = []
    for rtype in ("A", "AAAA"):
        fallback = fallback_targets(topology, rtype)
        if not fallback:
            continue
        regions = [
            LuaRegion(
                name=r.name,
                targets=split_by_family(r.dns_targets).get(rtype, ()),
                subnets=r.geo.subnets,
                countries=r.geo.countries,
                continents=r.geo.continents,
                health_url=health_url(r.access_url, r.dns_name or "", path),
            )
            for r in topology.regions
        ]
        script = shared_record_script(
            regions, fallback, geoip=geoip, health_check=options.health_check
        )
        records.append(f'{rtype} "{script}"')
    if records:
        dns = topology.dns
        yield DesiredRRSet(
            RRSet(name=dns.shared_hostname, type="LUA", ttl=dns.ttl, records=tuple(records)),
            topology.primary.name,
            "shared hostname: the nearest healthy region, else the primary",
        )


def _geolocation_lines(
    topology: Topology, rtype: str, path: str, health_check: HealthCheck
) -> Iterator[str]:
    fallback = fallback_targets(topology, rtype)
    if not fallback:
        return
    yield GeoRecord(rtype, topology.primary.name, DEFAULT_LOCATION, fallback).text()
    taken: set[str] = set()
    for region in topology.regions:
        targets = split_by_family(region.dns_targets).get(rtype, ())
        if not targets:
            continue
        url = ""
        if health_check == "url":
            # Through the Route 53 form and back: the text matches what observe reads.
            url = check_url(check_config(health_url(region.access_url, region.dns_name or "",
                                                    path), 30))
        locations = [*(f"country={c}" for c in region.geo.countries),
                     *(f"continent={c}" for c in region.geo.continents)]
        for location in locations:
            if location not in taken:  # the first region listing a location gets it, as in LUA
                taken.add(location)
                yield GeoRecord(rtype, region.name, location, targets, url).text()


def _shared_geolocation(
    topology: Topology, options: GeoOptions, notes: list[str]
) -> Iterator[DesiredRRSet]:
    """Route 53: per region and location a geolocation record set carrying the region's
    health check; the default record set (no check) answers the primary."""
    if any(r.geo.subnets for r in topology.regions):
        notes.append(
            "coder_geo.subnets are not used by provider route53: it routes by the client's "
            "country and continent (geolocation)"
        )
    path = options.health_path or health_path(topology.generation)
    lines = [line for rtype in ("A", "AAAA")
             for line in _geolocation_lines(topology, rtype, path, options.health_check)]
    if lines:
        dns = topology.dns
        yield DesiredRRSet(
            RRSet(name=dns.shared_hostname, type=GEO_TYPE, ttl=dns.ttl, records=tuple(lines)),
            topology.primary.name,
            "shared hostname: geolocation per region with its health check, default the primary",
        )


def _shared_everywhere(
    topology: Topology, capabilities: Capabilities, notes: list[str]
) -> Iterator[DesiredRRSet]:
    """A provider without geo routing: every deployment's addresses, to every client."""
    dns = topology.dns
    if any(r.geo.subnets or r.geo.countries or r.geo.continents for r in topology.regions):
        notes.append(
            f"geo routing is not available on provider {capabilities.provider}: "
            f"{dns.shared_hostname} answers every deployment's addresses to every client"
        )
    every = [*topology.primary.dns_targets, *(a for r in topology.regions for a in r.dns_targets)]
    for rtype, targets in split_by_family(every).items():
        yield DesiredRRSet(
            RRSet(name=dns.shared_hostname, type=rtype, ttl=dns.ttl, records=targets),
            topology.primary.name,
            "shared hostname: every deployment (no geo routing on this provider)",
        )
