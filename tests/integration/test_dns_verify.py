"""Apply's DNS verify step on a real PowerDNS 4.7: right after the records are written, every
region's health check is warmed and the answers are awaited, so `dns check` is green at once;
a region that never answers as planned stops apply naming it and what it answers."""

from __future__ import annotations

import asyncio

import pytest

from coder_migrate.dns import apply_dns_changes, check_dns, plan_dns
from coder_migrate.dns.verify import raise_unless_verified, verify_dns
from coder_migrate.errors import ApplyError
from coder_migrate.inventory.model import Topology
from coder_migrate.providers.dns import PowerDnsAdapter
from tests.fixtures.dns import (
    LAB_ZONE,
    PRIMARY_TARGET,
    REGIONS,
    HealthEndpoint,
    PowerDnsServer,
    lab_topology_data,
)

pytestmark = pytest.mark.integration

SHARED = f"coder.{LAB_ZONE}"


def _topology(server: PowerDnsServer, port: int, *, nameservers: bool = True) -> Topology:
    return Topology.model_validate(lab_topology_data(
        {"provider": "powerdns", "powerdns": {
            "api_url": server.api_url, "api_key": {"env": "LAB_PDNS_API_KEY"},
            "nameservers": [server.nameserver] if nameservers else [],
        }},
        health_port=port,
    ))


def _apply(server: PowerDnsServer, topology: Topology) -> None:
    async def run() -> None:
        async with PowerDnsAdapter(api_url=server.api_url, api_key=server.api_key,
                                   zone=LAB_ZONE) as adapter:
            plan = await plan_dns(topology, adapter)
            await apply_dns_changes(adapter, plan.changes)

    asyncio.run(run())


@pytest.fixture
def server(powerdns: PowerDnsServer, monkeypatch: pytest.MonkeyPatch) -> PowerDnsServer:
    monkeypatch.setenv("LAB_PDNS_API_KEY", powerdns.api_key)
    powerdns.reset_zone()
    return powerdns


def test_after_verify_dns_check_is_green_at_once(
    server: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    topology = _topology(server, next(iter(health_endpoints.values())).port)
    _apply(server, topology)
    lines: list[tuple[str, str, str]] = []

    outcome = asyncio.run(raise_unless_verified(
        topology, {"primary", "eu-west"}, timeout=30,
        progress=lambda *line: lines.append(line),
    ))

    assert outcome.ok and outcome.answers == 9
    assert lines[0][:2] == ("dns", "gate") and "eu-west, us-east, ap-southeast" in lines[0][2]
    assert lines[-1][:2] == ("dns", "gate-ok") and "every region answers as planned" in lines[-1][2]
    # What a user runs next, without --wait: every answer is right the first time.
    report = asyncio.run(check_dns(topology, wait=0))
    assert report.ok, [r.to_json() for r in report.results if not r.ok]


def test_a_region_still_wrong_at_the_timeout_stops_apply_naming_it(
    server: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    topology = _topology(server, next(iter(health_endpoints.values())).port)
    health_endpoints["eu-west"].stop()
    _apply(server, topology)
    lines: list[tuple[str, str, str]] = []

    with pytest.raises(ApplyError) as caught:
        asyncio.run(raise_unless_verified(
            topology, {"primary"}, timeout=3, progress=lambda *line: lines.append(line),
        ))

    message = caught.value.message
    assert caught.value.exit_code == 7
    eu = REGIONS["eu-west"]
    assert message.startswith("DNS answers not as planned after 3 s: eu-west: ")
    assert (f"A {SHARED} from {eu['test']} via {server.nameserver} answered {PRIMARY_TARGET}, "
            f"expected {eu['target']}") in message
    # ... and the URL the server's health check probes: v1's /cem-healthz.
    port = health_endpoints["eu-west"].port
    assert f"checked at http://coder-eu-west.{LAB_ZONE}:{port}/cem-healthz)" in message
    assert "us-east" not in message and "ap-southeast" not in message
    # The progress said which region was still wrong while it waited.
    assert any(region == "eu-west" and phase == "gate" and "not as planned yet" in text
               for region, phase, text in lines)


def test_a_limited_wave_verifies_only_its_regions(
    server: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    topology = _topology(server, next(iter(health_endpoints.values())).port)
    health_endpoints["eu-west"].stop()
    _apply(server, topology)
    outcome = asyncio.run(raise_unless_verified(topology, {"us-east"}, timeout=10))
    assert outcome.ok and outcome.answers == 3  # us-east's name, wildcard, shared name


def test_without_a_server_to_ask_verify_says_so(
    server: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    topology = _topology(server, 1, nameservers=False)
    outcome = asyncio.run(verify_dns(topology, timeout=1))
    assert outcome.ok and outcome.answers == 0
    assert outcome.skipped.startswith("coder_dns.powerdns.nameservers: expected the "
                                      "authoritative servers")


