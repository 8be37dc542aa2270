"""The PowerDNS LUA record behind the shared hostname: the nearest healthy region answers.

One record per address family (``A "<script>"``, ``AAAA "<script>"``), each a full Lua script
(leading ``;``) evaluated by PowerDNS for every query:

1. the first region whose ``coder_geo.subnets`` contain the client (``netmask``; the EDNS
   Client Subnet when the server processes it, else the resolver's address);
2. with a GeoIP database, the first region listing the client's country, then the first
   listing its continent (``country``/``continent``), most specific first as octoDNS orders
   its rules;
3. that region's targets if its health check passes, else the fallback (the primary's
   targets); no match at all also answers the fallback.

The health check is ``ifurlup`` on the region's health path (the one its generation's server
serves, :mod:`coder_migrate.providers.coder.health`) with two ordered sets, the
region's targets then the fallback: on PowerDNS 4.7 it is the only check that takes ordered
sets (``ifportup`` takes one flat list and, when all are down, still answers one of them), so
"the region is down" is visible to the script as an answer that left the region's set.

The text is a pure function of the inventory: same inventory, byte-identical record, so a
re-plan finds nothing to change. It is kept on one line, in single quotes and printable ASCII,
so PowerDNS stores and returns it unchanged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["HealthCheck", "LuaRegion", "health_url", "shared_record_script"]

HealthCheck = Literal["url", "none"]


@dataclass(frozen=True)
class LuaRegion:
    """What the script needs to know about one region, for one address family."""

    name: str
    targets: tuple[str, ...]
    subnets: tuple[str, ...]
    countries: tuple[str, ...]
    continents: tuple[str, ...]
    health_url: str


def health_url(access_url: str, host: str, path: str) -> str:
    """The URL PowerDNS probes: the region's scheme and port, its DNS name, *path*."""
    parts = urlsplit(access_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{path}"


def _quote(value: str) -> str:
    if any(c in value for c in "'\\\"") or not value.isprintable():
        raise ValueError(f"value not allowed in a LUA record: {value!r}")
    return f"'{value}'"


def _table(values: Sequence[str]) -> str:
    return "{" + ",".join(_quote(v) for v in values) + "}"


def shared_record_script(
    regions: Sequence[LuaRegion],
    fallback: Sequence[str],
    *,
    geoip: bool,
    health_check: HealthCheck = "url",
) -> str:
    """The script (with its leading ``;``) that answers the shared hostname for one family."""
    usable = [r for r in regions if r.targets]
    parts = [f";local fallback={_table(fallback)}"]
    if health_check == "url":
        parts.append(
            "local function pick(url,targets)"
            " local got=ifurlup(url,{targets,fallback},{selector='all',backupSelector='all'})"
            " local own={} for _,ip in ipairs(targets) do own[ip]=true end"
            " for _,ip in ipairs(got) do if not own[ip] then return fallback end end"
            " return got end"
        )

        def answer(region: LuaRegion) -> str:
            return f"return pick({_quote(region.health_url)},{_table(region.targets)})"
    else:

        def answer(region: LuaRegion) -> str:
            return f"return {_table(region.targets)}"

    for region in usable:
        if region.subnets:
            parts.append(f"if netmask({_table(region.subnets)}) then {answer(region)} end")
    if geoip:
        for region in usable:
            if region.countries:
                parts.append(f"if country({_table(region.countries)}) then {answer(region)} end")
        for region in usable:
            if region.continents:
                parts.append(
                    f"if continent({_table(region.continents)}) then {answer(region)} end"
                )
    parts.append("return fallback")
    return " ".join(parts)


def family(address: str) -> Literal["A", "AAAA"]:
    return "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
