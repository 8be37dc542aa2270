"""Rules that span fields or hosts, checked after each host's values have their types.

Each finding names the host (or ``all``), the inventory key, what was expected and what was
found; the loader adds the file that defines the key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from coder_migrate.inventory.model import Region, Topology, _under

__all__ = ["Finding", "cross_field_findings"]


@dataclass(frozen=True)
class Finding:
    owner: str  # inventory host name, or "all" for settings shared by every host
    key: str  # inventory variable, dotted into nested keys
    expected: str
    found: str


def cross_field_findings(topology: Topology) -> list[Finding]:
    return [
        *_unique_hostnames(topology),
        *_names_under_zone(topology),
        *_namespaces_differ_from_providers(topology),
        *_providers_only_for_v1(topology),
        *_subnets_do_not_overlap(topology),
        *_one_canary(topology),
        *_shared_hostname_not_a_region(topology),
        *_geodns_per_generation(topology),
    ]


def _sites(topology: Topology) -> Iterator[tuple[str, Region | None, str]]:
    yield topology.primary.name, None, topology.primary.access_url
    for region in topology.regions:
        yield region.name, region, region.access_url


def _unique_hostnames(topology: Topology) -> Iterator[Finding]:
    seen_url: dict[str, str] = {}
    seen_wildcard: dict[str, str] = {}
    seen_display: dict[str, str] = {}
    for site in (topology.primary, *topology.regions):
        netloc = urlsplit(site.access_url).netloc.lower()
        if netloc in seen_url:
            yield Finding(
                site.name, "coder_access_url",
                f"a host not used by another site ({seen_url[netloc]} uses it)", netloc,
            )
        seen_url.setdefault(netloc, site.name)
        if site.wildcard_host:
            if site.wildcard_host in seen_wildcard:
                yield Finding(
                    site.name, "coder_wildcard_host",
                    f"a wildcard not used by another site ({seen_wildcard[site.wildcard_host]} "
                    "uses it)",
                    site.wildcard_host,
                )
            seen_wildcard.setdefault(site.wildcard_host, site.name)
    for region in topology.regions:
        key = region.display_name.casefold()
        if key in seen_display:
            yield Finding(
                region.name, "coder_region_display_name",
                f"a display name not used by another region ({seen_display[key]} uses it)",
                region.display_name,
            )
        seen_display.setdefault(key, region.name)


def _names_under_zone(topology: Topology) -> Iterator[Finding]:
    zone = topology.dns.zone
    if not _under(topology.dns.shared_hostname, zone):
        yield Finding(
            "all", "coder_dns.shared_hostname", f"a name under the zone {zone}",
            topology.dns.shared_hostname,
        )
    for site in (topology.primary, *topology.regions):
        name = site.dns_name
        if name is None:
            if site is not topology.primary:
                yield Finding(
                    site.name, "coder_hostname",
                    "the region's DNS name (its access URL uses an IP address)", "nothing",
                )
        elif not _under(name, zone):
            key = "coder_hostname" if site.hostname else "coder_access_url"
            yield Finding(site.name, key, f"a host under the zone {zone}", name)
        if site.wildcard_host and not _under(site.wildcard_host[2:], zone):
            yield Finding(
                site.name, "coder_wildcard_host", f"'*.<domain>' with the domain under {zone}",
                site.wildcard_host,
            )


def _namespaces_differ_from_providers(topology: Topology) -> Iterator[Finding]:
    for region in topology.regions:
        for index, provider in enumerate(region.workspace_providers):
            if provider.namespace == region.namespace:
                yield Finding(
                    region.name, f"coder_workspace_providers[{index}].namespace",
                    f"a namespace other than the satellite's own ({region.namespace}); "
                    "Coder requires the satellite in a separate namespace",
                    provider.namespace,
                )


def _providers_only_for_v1(topology: Topology) -> Iterator[Finding]:
    if topology.generation == "v1":
        return
    for region in topology.regions:
        if region.workspace_providers:
            yield Finding(
                region.name, "coder_workspace_providers",
                "no workspace providers (they exist only in Coder v1; coder_generation is v2)",
                f"{len(region.workspace_providers)} provider(s)",
            )


def _subnets_do_not_overlap(topology: Topology) -> Iterator[Finding]:
    claimed: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
    for region in topology.regions:
        for text in region.geo.subnets:
            network = ipaddress.ip_network(text)
            for other, owner in claimed:
                if owner != region.name and network.version == other.version and (
                    network.overlaps(other)
                ):
                    yield Finding(
                        region.name, "coder_geo.subnets",
                        f"subnets that do not overlap another region's ({owner} has {other})",
                        text,
                    )
            claimed.append((network, region.name))
        for text in region.geo.test_subnets:
            network = ipaddress.ip_network(text)
            own = [ipaddress.ip_network(s) for s in region.geo.subnets]
            if own and not any(
                network.version == o.version and network.subnet_of(o)  # type: ignore[arg-type]
                for o in own
            ):
                yield Finding(
                    region.name, "coder_geo.test_subnets",
                    "test subnets inside the region's own coder_geo.subnets", text,
                )


def _one_canary(topology: Topology) -> Iterator[Finding]:
    canaries = [r.name for r in topology.regions if r.canary]
    for name in canaries[1:]:
        yield Finding(
            name, "coder_canary", f"at most one canary region ({canaries[0]} is already one)",
            "true",
        )


def _shared_hostname_not_a_region(topology: Topology) -> Iterator[Finding]:
    for region in topology.regions:
        if region.dns_name == topology.dns.shared_hostname:
            yield Finding(
                region.name, "coder_access_url",
                f"a region host other than the shared hostname {topology.dns.shared_hostname}",
                region.dns_name,
            )


# -- GeoDNS per generation (seeds 001, 003, 004; docs/dns.md) ---------------------------------

def _geo_routed(shared: str) -> str:
    return (f"the geo-routed {shared}, from inside a region, resolves to the nearest region, "
            "possibly the region itself")


def _geodns_per_generation(topology: Topology) -> Iterator[Finding]:
    """v1: satellites reach the primary by its own name; v2: the primary's access URL is not
    geo-routed. Only when the shared hostname is geo-routed (``Topology.geo_routed``)."""
    if not topology.geo_routed:
        return
    if topology.generation == "v1":
        yield from _v1_primary_has_its_own_name(topology)
        yield from _v1_primary_url_overrides(topology)
    else:
        yield from _v2_primary_access_url_not_geo_routed(topology)


def _v1_primary_has_its_own_name(topology: Topology) -> Iterator[Finding]:
    shared = topology.dns.shared_hostname
    primary = topology.primary
    if urlsplit(primary.own_url).hostname == shared:
        yield Finding(
            primary.name, "coder_hostname",
            "the primary's own DNS name, which no geo rule answers (seed 001: "
            "coder-primary.example.com next to the shared coder.example.com); satellites' "
            f"coderd.satellite.primaryURL is built from it, and {_geo_routed(shared)}",
            primary.hostname or f"nothing (the access URL's host is {shared})",
        )


def _nested(values: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(values, dict):
            return None
        values = values.get(key)  # type: ignore[assignment]
    return values


def _v1_primary_url_overrides(topology: Topology) -> Iterator[Finding]:
    shared = topology.dns.shared_hostname
    for region in topology.regions:
        url = _nested(region.values, "coderd", "satellite", "primaryURL")
        if isinstance(url, str) and (urlsplit(url).hostname or "").lower() == shared:
            yield Finding(
                region.name, "coder_values.coderd.satellite.primaryURL",
                f"the primary's own name ({topology.primary.own_url}), not the shared hostname: "
                f"{_geo_routed(shared)}, so the satellite would proxy to a satellite",
                url,
            )


def _v2_primary_access_url_not_geo_routed(topology: Topology) -> Iterator[Finding]:
    shared = topology.dns.shared_hostname
    primary = topology.primary
    if (urlsplit(primary.access_url).hostname or "").lower() == shared:
        yield Finding(
            primary.name, "coder_access_url",
            f"the primary's own name, not the geo-routed shared hostname {shared} "
            "(coder_dns.geo_routing is true): workspace proxies serve neither the dashboard "
            "nor the API (seeds 003 and 004), and proxies' CODER_PRIMARY_ACCESS_URL is this URL",
            primary.access_url,
        )
