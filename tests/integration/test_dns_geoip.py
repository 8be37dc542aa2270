"""Country and continent answers through PowerDNS' GeoIP backend and a MaxMind DB made here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import maxminddb
import pytest

from coder_migrate.dns import apply_dns_changes, plan_dns
from coder_migrate.inventory.model import Topology
from coder_migrate.providers.dns import PowerDnsAdapter
from tests.fixtures.dns import (
    GEO_CLIENTS,
    LAB_ZONE,
    PRIMARY_TARGET,
    REGIONS,
    HealthEndpoint,
    PowerDnsServer,
    lab_topology_data,
    wait_for_answer,
    write_test_mmdb,
)

pytestmark = pytest.mark.integration

SHARED = f"coder.{LAB_ZONE}"


def test_the_written_database_reads_back(tmp_path: Path) -> None:
    path = write_test_mmdb(tmp_path / "check.mmdb")
    with maxminddb.open_database(str(path)) as reader:
        record = reader.get("100.64.1.7")
    assert record == {"country": {"iso_code": "DE"}, "continent": {"code": "EU"}}


def test_clients_are_answered_by_country_then_continent(
    powerdns_geoip: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    server = powerdns_geoip
    server.reset_zone()
    port = next(iter(health_endpoints.values())).port
    topology = Topology.model_validate(
        lab_topology_data(
            {
                "provider": "powerdns",
                "powerdns": {"api_url": server.api_url, "api_key": {"env": "UNUSED"}},
            },
            health_port=port,
        )
    )

    async def run() -> bool:
        async with PowerDnsAdapter(
            api_url=server.api_url, api_key=server.api_key, zone=LAB_ZONE
        ) as adapter:
            capabilities = await adapter.capabilities()
            plan = await plan_dns(topology, adapter)
            await apply_dns_changes(adapter, plan.changes)
            return capabilities.geoip

    assert asyncio.run(run()), "the server launched with the GeoIP backend reports geoip"
    for subnet, (_, _, region) in GEO_CLIENTS.items():
        target = PRIMARY_TARGET if region == "primary" else REGIONS[region]["target"]
        client = subnet.replace(".0/24", ".9/32")
        wait_for_answer(server.nameserver, SHARED, client, [target])
    # Subnet rules still win over geography.
    eu = REGIONS["eu-west"]
    wait_for_answer(server.nameserver, SHARED, eu["test"], [eu["target"]])


def test_a_large_inventory_stays_within_the_lua_execution_limit(
    powerdns_geoip: PowerDnsServer,
) -> None:
    """Eight regions, every rule evaluated: PowerDNS' default 1000-instruction limit holds."""
    server = powerdns_geoip
    server.reset_zone()
    data = lab_topology_data(
        {"provider": "powerdns", "powerdns": {"api_url": server.api_url,
                                              "api_key": {"env": "UNUSED"}}},
        health_port=9,
    )
    template = data["regions"][0]
    data["regions"] = []
    for index in range(8):
        region = {**template, "name": f"r{index}", "display_name": f"R{index}",
                  "access_url": f"http://coder-r{index}.{LAB_ZONE}:9",
                  "wildcard_host": f"*.coder-r{index}.{LAB_ZONE}",
                  "dns_targets": [f"127.0.{20 + index}.1"],
                  "geo": {"subnets": [f"10.{index}.0.0/16", f"10.{100 + index}.0.0/16"],
                          "test_subnets": [], "countries": ["DE", "FR", "IT", "ES"][:index % 4 + 1],
                          "continents": ["OC"] if index == 7 else []}}
        data["regions"].append(region)
    topology = Topology.model_validate(data)

    async def run() -> None:
        async with PowerDnsAdapter(
            api_url=server.api_url, api_key=server.api_key, zone=LAB_ZONE
        ) as adapter:
            plan = await plan_dns(topology, adapter)
            await apply_dns_changes(adapter, plan.changes)

    asyncio.run(run())
    # Brazil matches no rule: every netmask, country and continent test runs, then fallback.
    wait_for_answer(server.nameserver, SHARED, "100.64.5.9/32", [PRIMARY_TARGET], timeout=3)
