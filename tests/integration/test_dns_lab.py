"""GeoDNS against the lab's own PowerDNS and BIND, driven by the lab inventories.

Each test leaves the lab zone as it found it: whatever it applies, it rolls back from the
plan's snapshots (which is itself what the test checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from coder_migrate.dns import apply_dns_changes, open_adapter, plan_dns, restore_dns_changes
from coder_migrate.dns.plan import DnsPlan
from coder_migrate.inventory import Topology, load_topology
from coder_migrate.providers.dns import RRSet
from tests.fixtures.dns import HealthEndpoint, ecs_answer, wait_for_answer
from tests.fixtures.lab import LabHandle

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# PowerDNS' default lua-health-checks-interval is 5 s; the lab keeps it.
FAIL_OVER_SECONDS = 3 * 5 + 2


def _observe(topology: Topology) -> dict[tuple[str, str], RRSet]:
    async def run() -> dict[tuple[str, str], RRSet]:
        async with open_adapter(topology) as adapter:
            return {r.key: r for r in await adapter.observe() if r.type != "SOA"}

    return asyncio.run(run())


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((address, port)) != 0


@pytest.fixture
def region_health(lab: LabHandle) -> Iterator[dict[str, HealthEndpoint]]:
    """A /healthz on each lab region's address, unless something already serves there."""
    topology = load_topology(REPO / "inventories" / "lab")
    started: dict[str, HealthEndpoint] = {}
    for region in topology.regions:
        parts = urlsplit(region.access_url)
        assert parts.hostname and parts.port
        if _port_free(parts.hostname, parts.port):
            endpoint = HealthEndpoint(parts.hostname, parts.port)
            endpoint.start()
            started[region.name] = endpoint
    yield started
    for endpoint in started.values():
        endpoint.stop()


@contextlib.contextmanager
def _deployed(topology: Topology) -> Iterator[DnsPlan]:
    """Apply the inventory's DNS, yield the plan, then roll back and check the zone is as found."""
    found = _observe(topology)

    async def deploy() -> DnsPlan:
        async with open_adapter(topology) as adapter:
            plan = await plan_dns(topology, adapter)
            await apply_dns_changes(adapter, plan.changes)
            return plan

    async def roll_back(plan: DnsPlan) -> None:
        async with open_adapter(topology) as adapter:
            await restore_dns_changes(adapter, plan.changes)

    plan = asyncio.run(deploy())
    try:
        yield plan
    finally:
        asyncio.run(roll_back(plan))
    assert _observe(topology) == found


def _replan(topology: Topology) -> DnsPlan:
    async def run() -> DnsPlan:
        async with open_adapter(topology) as adapter:
            return await plan_dns(topology, adapter)

    return asyncio.run(run())


def test_lab_powerdns_answers_each_region_from_its_subnet(
    lab: LabHandle, region_health: dict[str, HealthEndpoint]
) -> None:
    topology = load_topology(REPO / "inventories" / "lab")
    assert topology.dns.powerdns is not None
    assert topology.dns.powerdns.api_url == lab.endpoints.powerdns_api_url
    nameserver = "{}:{}".format(*lab.endpoints.powerdns_dns)
    shared = topology.dns.shared_hostname
    answers: dict[str, list[str]] = {}

    def check() -> None:
        for region in topology.regions:
            assert region.dns_name is not None
            expected = sorted(region.dns_targets)
            assert ecs_answer(nameserver, region.dns_name, "100.64.0.1/32") == expected
            for subnet in region.geo.test_subnets:
                target = expected if region.name in region_health else sorted(
                    topology.primary.dns_targets
                )
                wait_for_answer(nameserver, shared, subnet, target, timeout=FAIL_OVER_SECONDS)
                answers[region.name] = target

    with _deployed(topology):
        check()
        # A region whose health endpoint stops is skipped: its clients get the primary.
        down = next(r for r in topology.regions if r.name in region_health)
        region_health[down.name].stop()
        wait_for_answer(
            nameserver, shared, down.geo.test_subnets[0], sorted(topology.primary.dns_targets),
            timeout=FAIL_OVER_SECONDS,
        )
        again = _replan(topology)
        assert again.is_empty, [c.summary() for c in again.effective]
    assert len(answers) == len(topology.regions)
    assert region_health, "every lab region address was taken: nothing checked the geo answer"


def test_lab_bind_takes_the_records_and_says_geo_is_unavailable(lab: LabHandle) -> None:
    topology = load_topology(REPO / "inventories" / "lab-rfc2136")
    assert topology.dns.rfc2136 is not None
    assert topology.dns.rfc2136.server == "{}:{}".format(*lab.endpoints.bind_dns)
    nameserver = topology.dns.rfc2136.server
    with _deployed(topology) as plan:
        assert any("geo routing is not available on provider rfc2136" in n for n in plan.notes)
        every = sorted(
            {*topology.primary.dns_targets, *(a for r in topology.regions for a in r.dns_targets)}
        )
        assert ecs_answer(nameserver, topology.dns.shared_hostname, "100.64.0.1/32") == every
        for region in topology.regions:
            assert region.dns_name is not None
            assert ecs_answer(nameserver, f"x.{region.dns_name}", "100.64.0.1/32") == sorted(
                region.dns_targets
            )
        again = _replan(topology)
        assert again.is_empty, [c.summary() for c in again.effective]
