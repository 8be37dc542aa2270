"""What each region's clients should be answered, and asking a server as one of them.

``coder-migrate dns check`` is built on these two: :func:`expectations` lists, per region and
test subnet, the names to query and the addresses that must come back; :func:`ecs_query`
asks an authoritative server with an EDNS Client Subnet option, as if from that subnet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.asyncquery
import dns.edns
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from coder_migrate.dns.lua import family
from coder_migrate.errors import DnsError
from coder_migrate.inventory.model import Topology
from coder_migrate.providers.dns.base import Capabilities

__all__ = ["Expectation", "ecs_query", "expectations"]


@dataclass(frozen=True)
class Expectation:
    region: str
    name: str
    client_subnet: str
    rdtype: str
    expected: tuple[str, ...]
    """Sorted addresses the answer must be, exactly."""


def expectations(topology: Topology, capabilities: Capabilities) -> list[Expectation]:
    """Per region and test subnet: its own name, and the shared name (geo or every site)."""
    every = [*topology.primary.dns_targets, *(a for r in topology.regions for a in r.dns_targets)]
    found: list[Expectation] = []
    for region in topology.regions:
        for subnet in region.geo.test_subnets:
            for rdtype in ("A", "AAAA"):
                own = tuple(sorted(a for a in region.dns_targets if family(a) == rdtype))
                if not own:
                    continue
                if region.dns_name:
                    found.append(Expectation(region.name, region.dns_name, subnet, rdtype, own))
                shared = own if capabilities.geo_routing else tuple(
                    sorted({a for a in every if family(a) == rdtype})
                )
                found.append(
                    Expectation(
                        region.name, topology.dns.shared_hostname, subnet, rdtype, shared
                    )
                )
    return found


async def ecs_query(
    nameserver: str,
    name: str,
    client_subnet: str | None,
    rdtype: str = "A",
    *,
    timeout: float = 2.0,
) -> tuple[str, ...]:
    """The sorted addresses *nameserver* (``host:port``) answers to a client in *client_subnet*."""
    host, _, port = nameserver.rpartition(":")
    options: list[dns.edns.Option] = []
    if client_subnet is not None:
        network = ipaddress.ip_network(client_subnet, strict=False)
        options.append(dns.edns.ECSOption(str(network.network_address), network.prefixlen))
    query = dns.message.make_query(name, rdtype, use_edns=0, options=options)
    try:
        response = await dns.asyncquery.udp(query, host.strip("[]"), port=int(port),
                                            timeout=timeout)
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
