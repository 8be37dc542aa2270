"""``coder-migrate dns check``: ask every authoritative server as each region's clients would.

:func:`expectations` lists, per region and test client, the names to query and the exact
addresses that must come back; :func:`ecs_query` asks an authoritative server with an EDNS
Client Subnet option, as if from that client; :func:`check_dns` runs every expectation
against every server and returns a :class:`CheckReport`.

What is expected, per region and client subnet (``coder_geo.test_subnets``):

- the region's own hostname and a name under its wildcard: the region's targets;
- the shared hostname, on a provider with geo routing (PowerDNS LUA records): the region's
  targets, or the fallback (the primary's targets, as :mod:`coder_migrate.dns.lua` builds the
  record) when the caller says the region is down (``expect_down``);
- the shared hostname, on a provider without geo routing: every site's targets (the plain
  record set the plan writes there).

Countries: which address a GeoIP database places in which country is a property of that
database, not of the deployment, so the inventory does not carry it. The caller names
clients it knows the server's database places in a country (``geo_clients``:
``{"IE": "100.64.11.1/32"}``); each is expected at the first region listing that country,
as the LUA record orders its rules.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import dns.asyncquery
import dns.edns
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from coder_migrate.dns.desired import fallback_targets, split_by_family
from coder_migrate.dns.lua import health_url
from coder_migrate.errors import ConfigError, DnsError
from coder_migrate.inventory.model import Region, Topology
from coder_migrate.poll import attempts
from coder_migrate.providers.coder.health import health_path
from coder_migrate.providers.dns import open_adapter
from coder_migrate.providers.dns.base import Capabilities
from coder_migrate.tasks import run_all

__all__ = [
    "CheckReport",
    "CheckResult",
    "Expectation",
    "check_dns",
    "check_servers",
    "ecs_query",
    "expectations",
    "parse_geo_clients",
]

# The label queried under a region's wildcard: any name there must answer the region.
WILDCARD_PROBE_LABEL = "coder-migrate-check"
_CONCURRENT_QUERIES = 16
_RETRY_PAUSE_SECONDS = 0.25


@dataclass(frozen=True)
class Expectation:
    region: str
    name: str
    client_subnet: str
    rdtype: str
    expected: tuple[str, ...]
    """Sorted addresses the answer must be, exactly."""
    why: str = ""
    """What the answer means: the region's own name, its wildcard, the shared name..."""
    country: str = ""
    """The client's country when it stands for a GeoIP client (``geo_clients``)."""


def _family_targets(region: Region, rdtype: str) -> tuple[str, ...]:
    return split_by_family(region.dns_targets).get(rdtype, ())


def _wildcard_probe(region: Region) -> str | None:
    wildcard = region.wildcard_host or (f"*.{region.dns_name}" if region.dns_name else None)
    return None if wildcard is None else f"{WILDCARD_PROBE_LABEL}.{wildcard.removeprefix('*.')}"


def _shared(
    topology: Topology, region: Region, rdtype: str, *, geo: bool, down: bool
) -> tuple[tuple[str, ...], str]:
    if not topology.geo_routed:
        return fallback_targets(topology, rdtype), "shared hostname: the primary (not geo-routed)"
    if not geo:
        every = [*topology.primary.dns_targets, *(a for r in topology.regions
                                                   for a in r.dns_targets)]
        return split_by_family(every).get(rdtype, ()), "shared hostname: every site (no geo)"
    # The URL the server's health check probes (the generation's path): when the answer is
    # the fallback instead of the region, that URL is where to look.
    probe = health_url(region.access_url, region.dns_name or "", health_path(topology.generation))
    if down:
        return (fallback_targets(topology, rdtype),
                f"shared hostname: fallback, {region.name} down ({probe})")
    return _family_targets(region, rdtype), f"shared hostname: nearest region, checked at {probe}"


def expectations(
    topology: Topology,
    capabilities: Capabilities,
    *,
    regions: Collection[str] | None = None,
    expect_down: Collection[str] = (),
    geo_clients: Mapping[str, str] | None = None,
) -> list[Expectation]:
    """Per region (all, or those in *regions*) and client: the names to ask and the answers.

    *expect_down* names regions whose health check is known to fail: their clients must get
    the fallback for the shared hostname. *geo_clients* maps a country to a client subnet the
    server's GeoIP database places there (see the module docstring).
    """
    geo = capabilities.geo_routing
    found: list[Expectation] = []
    for region in topology.regions:
        if regions is not None and region.name not in regions:
            continue
        down = region.name in expect_down
        for subnet in region.geo.test_subnets:
            for rdtype in ("A", "AAAA"):
                own = _family_targets(region, rdtype)
                if not own:
                    continue
                if region.dns_name:
                    found.append(Expectation(region.name, region.dns_name, subnet, rdtype, own,
                                             "own hostname"))
                probe = _wildcard_probe(region)
                if probe:
                    found.append(Expectation(region.name, probe, subnet, rdtype, own,
                                             "wildcard (dev URLs and apps)"))
                shared, why = _shared(topology, region, rdtype, geo=geo, down=down)
                found.append(Expectation(region.name, topology.dns.shared_hostname, subnet,
                                         rdtype, shared, why))
    for country, subnet in (geo_clients or {}).items():
        region = _region_of_country(topology, country, subnet)
        if regions is not None and region.name not in regions:
            continue
        for rdtype in ("A", "AAAA"):
            if not _family_targets(region, rdtype):
                continue
            shared, why = _shared(topology, region, rdtype, geo=True,
                                  down=region.name in expect_down)
            found.append(Expectation(region.name, topology.dns.shared_hostname, subnet, rdtype,
                                     shared, why.replace("nearest region", f"country {country}", 1),
                                     country))
    return found


def _region_of_country(topology: Topology, country: str, subnet: str) -> Region:
    client = ipaddress.ip_network(subnet, strict=False)
    for region in topology.regions:
        for served in region.geo.subnets:
            network = ipaddress.ip_network(served)
            if client.version == network.version and client.subnet_of(network):  # type: ignore[arg-type]
                raise ConfigError(
                    f"--geo-client {country}={subnet}: expected a client outside every "
                    f"coder_geo.subnets (it is in {region.name}'s {served}, which routes it first)"
                )
    for region in topology.regions:
        if country in region.geo.countries:
            return region
    raise ConfigError(
        f"--geo-client {country}={subnet}: expected a country listed in some region's "
        "coder_geo.countries"
    )


def parse_geo_clients(values: Sequence[str]) -> dict[str, str]:
    """``["IE=100.64.11.1/32", ...]`` as ``{"IE": "100.64.11.1/32"}``; ConfigError otherwise."""
    clients: dict[str, str] = {}
    for value in values:
        country, sep, subnet = value.partition("=")
        country = country.strip().upper()
        try:
            if not sep or len(country) != 2 or not country.isalpha():
                raise ValueError(value)
            network = ipaddress.ip_network(subnet.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"--geo-client {value}: expected COUNTRY=SUBNET, e.g. IE=100.64.11.1/32"
            ) from None
        clients[country] = str(network)
    return clients


def _host_port(value: str, where: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    try:
        number = int(port)
        if not sep or not host or not 0 < number < 65536:
            raise ValueError(value)
    except ValueError:
        raise ConfigError(f"{where} {value}: expected host:port, e.g. 127.0.0.1:53") from None
    return host.strip("[]"), number


async def ecs_query(
    nameserver: str,
    name: str,
    client_subnet: str | None,
    rdtype: str = "A",
    *,
    timeout: float = 2.0,
) -> tuple[str, ...]:
    """The sorted records *nameserver* (``host:port``) answers to a client in *client_subnet*."""
    host, port = _host_port(nameserver, "server")
    options: list[dns.edns.Option] = []
    if client_subnet is not None:
        network = ipaddress.ip_network(client_subnet, strict=False)
        options.append(dns.edns.ECSOption(str(network.network_address), network.prefixlen))
    query = dns.message.make_query(name, rdtype, use_edns=0, options=options)
    try:
        response = await dns.asyncquery.udp(query, host, port=port, timeout=timeout)
    except dns.exception.Timeout as error:
        raise DnsError(f"{nameserver} did not answer {rdtype} {name} within {timeout}s") from error
    except (OSError, dns.exception.DNSException) as error:
        raise DnsError(f"querying {nameserver} for {rdtype} {name} failed: {error}") from error
    if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise DnsError(
            f"{nameserver} answered {rdtype} {name} with {dns.rcode.to_text(response.rcode())}"
        )
    wanted = dns.rdatatype.from_text(rdtype)
    return tuple(
        sorted(rd.to_text() for rrset in response.answer if rrset.rdtype == wanted for rd in rrset)
    )


@dataclass(frozen=True)
class CheckResult:
    """One expectation asked of one server."""

    expectation: Expectation
    server: str
    got: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.got == self.expectation.expected

    def to_json(self) -> dict[str, Any]:
        e = self.expectation
        return {
            "region": e.region, "server": self.server, "name": e.name, "type": e.rdtype,
            "client_subnet": e.client_subnet, "country": e.country or None, "why": e.why,
            "expected": list(e.expected), "got": list(self.got), "ok": self.ok,
        }


@dataclass(frozen=True)
class CheckReport:
    zone: str
    provider: str
    geo_routing: bool
    geoip: bool
    servers: tuple[str, ...]
    results: tuple[CheckResult, ...]
    notes: tuple[str, ...] = field(default=())
    seconds: float = 0.0
    """How long the check took, waits included."""

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failed_regions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.expectation.region for r in self.results if not r.ok))

    def raise_if_failed(self) -> None:
        wrong = [r for r in self.results if not r.ok]
        if not wrong:
            return
        first = wrong[0]
        raise DnsError(
            f"dns check: {len(wrong)} of {len(self.results)} answers wrong in region(s) "
            f"{', '.join(self.failed_regions)} (first: {first.server} answered "
            f"{first.expectation.rdtype} {first.expectation.name} to "
            f"{first.expectation.client_subnet} with {', '.join(first.got) or 'nothing'}, "
            f"expected {', '.join(first.expectation.expected)})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "zone": self.zone, "provider": self.provider, "geo_routing": self.geo_routing,
            "geoip": self.geoip, "servers": list(self.servers), "notes": list(self.notes),
            "ok": self.ok, "failed_regions": list(self.failed_regions),
            "seconds": round(self.seconds, 3),
            "results": [r.to_json() for r in self.results],
        }


def check_servers(topology: Topology, override: Sequence[str] = ()) -> tuple[str, ...]:
    """The authoritative servers to ask: *override*, else the ones the inventory names."""
    dns_settings = topology.dns
    if override:
        servers = tuple(override)
    elif dns_settings.provider == "rfc2136":
        assert dns_settings.rfc2136 is not None
        servers = (dns_settings.rfc2136.server,)
    elif dns_settings.provider in ("powerdns", "route53"):
        settings = dns_settings.powerdns or dns_settings.route53
        assert settings is not None
        servers = settings.nameservers
        if not servers:
            raise ConfigError(
                f"coder_dns.{dns_settings.provider}.nameservers: expected the authoritative "
                "servers (host:port) to query, or --server host:port"
            )
    else:
        raise ConfigError(
            "coder_dns.provider zonefile names no server to query: expected --server host:port "
            "of a server that loads the zone file"
        )
    for server in servers:
        _host_port(server, "server")
    return servers


def _validate_regions(topology: Topology, names: Collection[str], option: str) -> None:
    known = [r.name for r in topology.regions]
    for name in names:
        if name not in known:
            raise ConfigError(
                f"{option} {name}: expected one of the inventory's regions ({', '.join(known)})"
            )


async def _probe(server: str, zone: str, timeout: float) -> None:
    """Fail with one line unless *server* answers for *zone* at all."""
    try:
        soa = await ecs_query(server, zone, None, "SOA", timeout=timeout)
    except DnsError as error:
        raise DnsError(f"dns check: {error.message}") from error
    if not soa:
        raise DnsError(f"DNS server {server} is not authoritative for zone {zone} (no SOA)")


RoundHook = Callable[[Sequence["CheckResult"], float], None]
"""Called after each round that left answers wrong: those answers and the seconds so far."""


async def check_dns(
    topology: Topology,
    *,
    limit: Collection[str] = (),
    expect_down: Collection[str] = (),
    servers: Sequence[str] = (),
    geo_clients: Mapping[str, str] | None = None,
    wait: float = 0.0,
    timeout: float = 2.0,
    capabilities: Capabilities | None = None,
    on_round: RoundHook | None = None,
) -> CheckReport:
    """Ask every server every expectation; re-ask wrong answers until *wait* seconds passed.

    *capabilities* default to what the inventory's DNS provider reports (PowerDNS: its API),
    so the check expects what a plan on that server writes. *on_round* sees the answers
    still wrong after each round (apply's verify step shows them as progress).
    """
    started = time.monotonic()
    _validate_regions(topology, limit, "--limit")
    _validate_regions(topology, expect_down, "--expect-down")
    targets = check_servers(topology, servers)
    if capabilities is None:
        async with open_adapter(topology) as adapter:
            capabilities = await adapter.capabilities()
    notes = _check_notes(topology, capabilities, expect_down=expect_down,
                         geo_clients=geo_clients)
    wanted = expectations(
        topology, capabilities, regions=set(limit) if limit else None,
        expect_down=set(expect_down), geo_clients=geo_clients,
    )
    if not wanted:
        raise ConfigError(
            "coder_geo.test_subnets: expected at least one test subnet in a checked region "
            "with coder_dns_targets"
        )
    await run_all([partial(_probe, s, topology.dns.zone, timeout) for s in targets])
    results = await _ask_until_right(
        [(e, s) for s in targets for e in wanted], timeout=timeout,
        deadline=started + wait, started=started, on_round=on_round,
    )
    return CheckReport(
        zone=topology.dns.zone,
        provider=capabilities.provider,
        geo_routing=capabilities.geo_routing,
        geoip=capabilities.geoip,
        servers=targets,
        results=tuple(results[(e, s)] for s in targets for e in wanted),
        notes=tuple(notes),
        seconds=time.monotonic() - started,
    )


def _check_notes(
    topology: Topology, capabilities: Capabilities, *, expect_down: Collection[str],
    geo_clients: Mapping[str, str] | None,
) -> list[str]:
    """What the reader must know about this provider's answers; ConfigError for options
    the provider makes meaningless."""
    notes: list[str] = []
    if not topology.geo_routed:
        if expect_down:
            raise ConfigError(
                f"--expect-down: {topology.dns.shared_hostname} is not geo-routed "
                f"({topology.generation}), so no region fails over"
            )
        notes.append(
            f"{topology.dns.shared_hostname} is not geo-routed ({topology.generation}): it is "
            "checked to answer the primary; per-region names as usual"
        )
    elif not capabilities.geo_routing:
        if expect_down:
            raise ConfigError(
                f"--expect-down: provider {capabilities.provider} has no geo routing or health "
                "checks, so no region fails over"
            )
        notes.append(
            f"provider {capabilities.provider} has no geo routing: {topology.dns.shared_hostname} "
            "is checked to answer every site's addresses; per-region names as usual"
        )
    elif not capabilities.client_subnet:
        notes.append(
            f"the {capabilities.provider} server ignores EDNS Client Subnet: answers follow this "
            "machine's address, not the test subnets"
        )
    if geo_clients and not capabilities.geoip:
        raise ConfigError(
            f"--geo-client: the {capabilities.provider} server has no GeoIP database, so no "
            "answer depends on a client's country"
        )
    return notes


async def _ask_until_right(
    pending: list[tuple[Expectation, str]], *, timeout: float, deadline: float,
    started: float, on_round: RoundHook | None,
) -> dict[tuple[Expectation, str], CheckResult]:
    gate = asyncio.Semaphore(_CONCURRENT_QUERIES)

    async def ask(expectation: Expectation, server: str) -> CheckResult:
        async with gate:
            got = await ecs_query(server, expectation.name, expectation.client_subnet,
                                  expectation.rdtype, timeout=timeout)
        return CheckResult(expectation, server, got)

    results: dict[tuple[Expectation, str], CheckResult] = {}
    # LUA health checks start at a region's first query and run every interval: a region
    # answers correctly only once its first check has passed, so wrong answers are asked again.
    async for attempt in attempts(deadline - time.monotonic(), interval=_RETRY_PAUSE_SECONDS):
        for result in await run_all([partial(ask, e, s) for e, s in pending]):
            results[(result.expectation, result.server)] = result
        pending = [(e, s) for (e, s), r in results.items() if not r.ok]
        if not pending or attempt.last:
            break
        if on_round is not None:
            on_round([results[key] for key in pending], time.monotonic() - started)
    return results
