"""GeoDNS on a real PowerDNS 4.7: plan, apply, answers by client subnet, fail-over, rollback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from coder_migrate.dns import GeoOptions, apply_dns_changes, plan_dns, restore_dns_changes
from coder_migrate.engine.plan import Action, Plan, Wave
from coder_migrate.errors import DnsError, PlanError, UnsafePlan
from coder_migrate.inventory.model import Topology
from coder_migrate.providers.dns import PowerDnsAdapter, RRSet
from coder_migrate.providers.dns.base import RRSetChange
from tests.fixtures.dns import (
    LAB_ZONE,
    PRIMARY_TARGET,
    REGIONS,
    HealthEndpoint,
    PowerDnsServer,
    ecs_answer,
    free_loopback_port,
    lab_topology_data,
    wait_for_answer,
)

pytestmark = pytest.mark.integration

SHARED = f"coder.{LAB_ZONE}"
OUTSIDE_EVERY_REGION = "100.64.0.1/32"


def _topology(server: PowerDnsServer, port: int, edit: Any = None) -> Topology:
    data = lab_topology_data(
        {
            "provider": "powerdns",
            "powerdns": {
                "api_url": server.api_url,
                "api_key": {"env": "LAB_PDNS_API_KEY"},
                "nameservers": [server.nameserver],
            },
        },
        health_port=port,
    )
    if edit is not None:
        edit(data)
    return Topology.model_validate(data)


def _adapter(server: PowerDnsServer, api_key: str | None = None) -> PowerDnsAdapter:
    return PowerDnsAdapter(
        api_url=server.api_url, api_key=api_key or server.api_key, zone=LAB_ZONE,
        key_source="env LAB_PDNS_API_KEY",
    )


def _observe(server: PowerDnsServer) -> dict[tuple[str, str], RRSet]:
    async def run() -> dict[tuple[str, str], RRSet]:
        async with _adapter(server) as adapter:
            return {r.key: r for r in await adapter.observe()}

    return asyncio.run(run())


def _plan_and_apply(server: PowerDnsServer, topology: Topology, *, force: bool = False) -> Any:
    async def run() -> Any:
        async with _adapter(server) as adapter:
            plan = await plan_dns(topology, adapter)
            plan.raise_if_unsafe(force=force)
            await apply_dns_changes(adapter, plan.changes)
            return plan

    return asyncio.run(run())


def _plan(server: PowerDnsServer, topology: Topology) -> Any:
    async def run() -> Any:
        async with _adapter(server) as adapter:
            return await plan_dns(topology, adapter)

    return asyncio.run(run())


@pytest.fixture
def pdns(powerdns: PowerDnsServer) -> PowerDnsServer:
    powerdns.reset_zone()
    return powerdns


def test_three_regions_answer_each_region_by_client_subnet(
    pdns: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    port = next(iter(health_endpoints.values())).port
    plan = _plan_and_apply(pdns, _topology(pdns, port))

    created = {c.target for c in plan.changes if c.action is Action.CREATE}
    assert f"LUA {SHARED}" in created
    for name, spec in REGIONS.items():
        host = f"coder-{name}.{LAB_ZONE}"
        assert ecs_answer(pdns.nameserver, host, OUTSIDE_EVERY_REGION) == [spec["target"]]
        assert ecs_answer(pdns.nameserver, f"dev-app.{host}", OUTSIDE_EVERY_REGION) == [
            spec["target"]
        ]
        # The first query starts the region's health check; the answer follows within it.
        wait_for_answer(pdns.nameserver, SHARED, spec["test"], [spec["target"]])
    assert ecs_answer(pdns.nameserver, SHARED, OUTSIDE_EVERY_REGION) == [PRIMARY_TARGET]
    assert ecs_answer(pdns.nameserver, f"ws.{SHARED}", OUTSIDE_EVERY_REGION) == [PRIMARY_TARGET]


def test_reapply_is_empty_and_plans_are_reproducible(
    pdns: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    port = next(iter(health_endpoints.values())).port
    topology = _topology(pdns, port)
    _plan_and_apply(pdns, topology)
    first, second = _plan(pdns, topology), _plan(pdns, topology)
    assert first.is_empty, [c.summary() for c in first.effective]
    as_plan = [Plan.build(inventory="t", waves=[Wave(name="dns", regions=(), changes=p.changes)])
               for p in (first, second)]
    assert as_plan[0].checksum == as_plan[1].checksum


def test_region_down_fails_over_to_primary_within_the_check_interval(
    pdns: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    port = next(iter(health_endpoints.values())).port
    _plan_and_apply(pdns, _topology(pdns, port))
    eu = REGIONS["eu-west"]
    wait_for_answer(pdns.nameserver, SHARED, eu["test"], [eu["target"]])

    health_endpoints["eu-west"].stop()
    elapsed = wait_for_answer(
        pdns.nameserver, SHARED, eu["test"], [PRIMARY_TARGET],
        timeout=pdns.health_check_interval * 3 + 2,
    )
    assert elapsed <= pdns.health_check_interval * 3 + 2
    # The other regions keep their own answers.
    us = REGIONS["us-east"]
    assert wait_for_answer(pdns.nameserver, SHARED, us["test"], [us["target"]]) >= 0

    health_endpoints["eu-west"].start()
    wait_for_answer(
        pdns.nameserver, SHARED, eu["test"], [eu["target"]],
        timeout=pdns.health_check_interval * 3 + 2,
    )


def test_foreign_records_are_kept_and_reported(
    pdns: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    port = next(iter(health_endpoints.values())).port
    pdns.put_rrset(f"www.{LAB_ZONE}", "A", 300, ["127.0.50.1"])
    pdns.put_rrset(f"coder-eu-west.{LAB_ZONE}", "TXT", 300, ['"v=spf1 -all"'])
    pdns.put_rrset(f"coder-us-east.{LAB_ZONE}", "A", 300, ["127.0.50.2"])
    before = _observe(pdns)

    plan = _plan_and_apply(pdns, _topology(pdns, port))

    kept = {c.target: c.reason for c in plan.changes if c.action is Action.KEEP}
    assert "without our ownership marker" in kept[f"A coder-us-east.{LAB_ZONE}"]
    assert "no marker" in kept[f"TXT coder-eu-west.{LAB_ZONE}"]
    after = _observe(pdns)
    for key in (
        (f"www.{LAB_ZONE}", "A"),
        (f"coder-eu-west.{LAB_ZONE}", "TXT"),
        (f"coder-us-east.{LAB_ZONE}", "A"),
        (LAB_ZONE, "NS"),
    ):
        assert after[key].records == before[key].records, key
    assert after[(f"coder-us-east.{LAB_ZONE}", "A")].records == ("127.0.50.2",)
    assert (f"_coder-migrate-a.coder-us-east.{LAB_ZONE}", "TXT") not in after
    # Our records beside the foreign TXT are there.
    assert after[(f"coder-eu-west.{LAB_ZONE}", "A")].records == ("127.0.1.1",)


def test_rollback_restores_the_snapshot_exactly(
    pdns: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    port = next(iter(health_endpoints.values())).port
    pdns.put_rrset(f"www.{LAB_ZONE}", "A", 300, ["127.0.50.1"])
    _plan_and_apply(pdns, _topology(pdns, port))
    deployed = _observe(pdns)

    def move_eu_west(data: dict[str, Any]) -> None:
        data["regions"][0]["dns_targets"] = ["127.0.1.2", "127.0.1.3"]

    async def change_and_roll_back() -> list[str]:
        async with _adapter(pdns) as adapter:
            plan = await plan_dns(_topology(pdns, port, move_eu_west), adapter)
            done = await apply_dns_changes(adapter, plan.changes)
            assert done
            moved = {r.key: r for r in await adapter.observe()}
            assert moved[(f"coder-eu-west.{LAB_ZONE}", "A")].records == (
                "127.0.1.2", "127.0.1.3",
            )
            return await restore_dns_changes(adapter, plan.changes)

    restored = asyncio.run(change_and_roll_back())
    assert restored
    current = _observe(pdns)
    current.pop((LAB_ZONE, "SOA"))  # the serial moves with every change
    deployed.pop((LAB_ZONE, "SOA"))
    assert current == deployed


def test_rollback_of_a_first_deploy_leaves_the_zone_as_found(
    pdns: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    port = next(iter(health_endpoints.values())).port
    pdns.put_rrset(f"www.{LAB_ZONE}", "A", 300, ["127.0.50.1"])
    found = _observe(pdns)

    async def deploy_and_roll_back() -> None:
        async with _adapter(pdns) as adapter:
            plan = await plan_dns(_topology(pdns, port), adapter)
            await apply_dns_changes(adapter, plan.changes)
            await restore_dns_changes(adapter, plan.changes)

    asyncio.run(deploy_and_roll_back())
    current = _observe(pdns)
    for state in (current, found):
        state.pop((LAB_ZONE, "SOA"))
    assert current == found


def test_changing_most_owned_records_needs_force(
    pdns: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    port = next(iter(health_endpoints.values())).port
    _plan_and_apply(pdns, _topology(pdns, port))

    def move_everything(data: dict[str, Any]) -> None:
        for index, region in enumerate(data["regions"]):
            region["dns_targets"] = [f"127.0.{index + 1}.9"]
        data["primary"]["dns_targets"] = ["127.0.9.9"]
        # 9 owned rrsets: below octoDNS's minimum of 10 unless the inventory lowers it.
        data["dns"]["threshold_min_rrsets"] = 9

    moved = _topology(pdns, port, move_everything)
    unchanged = _observe(pdns)
    with pytest.raises(UnsafePlan, match="need --force"):
        _plan_and_apply(pdns, moved)
    assert _observe(pdns) == unchanged
    _plan_and_apply(pdns, moved, force=True)
    assert _observe(pdns)[(f"coder-eu-west.{LAB_ZONE}", "A")].records == ("127.0.1.9",)


def test_wrong_api_key_is_a_clear_error_and_changes_nothing(
    pdns: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    port = next(iter(health_endpoints.values())).port
    before = _observe(pdns)
    wrong = "0123456789abcdef-wrong-key"

    async def run() -> None:
        async with _adapter(pdns, api_key=wrong) as adapter:
            await plan_dns(_topology(pdns, port), adapter)

    with pytest.raises(DnsError) as caught:
        asyncio.run(run())
    message = str(caught.value)
    assert "refused the API key from env LAB_PDNS_API_KEY (401" in message
    assert wrong not in message and pdns.api_key not in message
    assert _observe(pdns) == before


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: d["regions"][1]["geo"].update(
                subnets=["203.0.113.0/24"], test_subnets=["203.0.113.130/32"]
            ),
            "coder_geo.subnets: expected subnets that do not overlap",
        ),
        (
            lambda d: d["regions"][2].update(access_url="http://coder-ap.other.test"),
            "coder_access_url: expected a host under the zone lab.test",
        ),
    ],
    ids=["overlapping-subnets", "hostname-outside-zone"],
)
def test_bad_inventory_is_refused_before_anything_changes(
    pdns: PowerDnsServer, edit: Any, expected: str
) -> None:
    before = _observe(pdns)
    with pytest.raises(PlanError, match=expected):
        _plan_and_apply(pdns, _topology(pdns, 8080, edit))
    assert _observe(pdns) == before


def test_a_change_made_after_the_plan_is_not_overwritten(
    pdns: PowerDnsServer, health_endpoints: dict[str, HealthEndpoint]
) -> None:
    port = next(iter(health_endpoints.values())).port
    plan = _plan(pdns, _topology(pdns, port))
    pdns.put_rrset(f"coder-eu-west.{LAB_ZONE}", "A", 300, ["127.0.50.3"])

    async def run() -> None:
        async with _adapter(pdns) as adapter:
            await apply_dns_changes(adapter, plan.changes)

    with pytest.raises(DnsError, match="changed since the plan was made"):
        asyncio.run(run())
    assert _observe(pdns)[(f"coder-eu-west.{LAB_ZONE}", "A")].records == ("127.0.50.3",)


def test_capabilities_are_read_from_the_server(pdns: PowerDnsServer) -> None:
    async def run() -> Any:
        async with _adapter(pdns) as adapter:
            return await adapter.capabilities()

    capabilities = asyncio.run(run())
    assert capabilities.lua_records and capabilities.client_subnet
    assert not capabilities.geoip


def test_without_health_checks_the_region_answers_at_once(pdns: PowerDnsServer) -> None:
    topology = _topology(pdns, 8080)

    async def run() -> None:
        async with _adapter(pdns) as adapter:
            plan = await plan_dns(topology, adapter, GeoOptions(health_check="none"))
            await apply_dns_changes(adapter, plan.changes)

    asyncio.run(run())
    start = time.monotonic()
    for spec in REGIONS.values():
        assert ecs_answer(pdns.nameserver, SHARED, spec["test"]) == [spec["target"]]
    assert time.monotonic() - start < 2


def test_ipv6_targets_are_answered_by_a_second_lua_record(pdns: PowerDnsServer) -> None:
    port = free_loopback_port()
    endpoints = [HealthEndpoint("::1", port), HealthEndpoint("127.0.1.1", port)]
    for endpoint in endpoints:
        endpoint.start()
    try:
        def dual_stack(data: dict[str, Any]) -> None:
            data["regions"][0]["dns_targets"] = ["127.0.1.1", "::1"]
            data["primary"]["dns_targets"] = [PRIMARY_TARGET, "::2"]

        _plan_and_apply(pdns, _topology(pdns, port, dual_stack))
        eu = REGIONS["eu-west"]
        assert ecs_answer(pdns.nameserver, f"coder-eu-west.{LAB_ZONE}", eu["test"], "AAAA") == [
            "::1"
        ]
        deadline = time.monotonic() + 10
        answer: list[str] = []
        while time.monotonic() < deadline:
            answer = ecs_answer(pdns.nameserver, SHARED, eu["test"], "AAAA")
            if answer == ["::1"]:
                break
            time.sleep(0.1)
        assert answer == ["::1"]
        assert ecs_answer(pdns.nameserver, SHARED, OUTSIDE_EVERY_REGION, "AAAA") == ["::2"]
        wait_for_answer(pdns.nameserver, SHARED, eu["test"], [eu["target"]])
    finally:
        for endpoint in endpoints:
            endpoint.stop()


def test_rrsets_written_together_land_together_or_not_at_all(pdns: PowerDnsServer) -> None:
    """A wave's rrsets are written in one PATCH (the zone writer's batch): PowerDNS applies
    them in one transaction, and an rrset it refuses leaves the others unwritten
    (pdns/ws-auth.cc, patchZone: abortTransaction on any rrset's error)."""
    names = [f"batch-{n}.{LAB_ZONE}" for n in range(3)]
    good = [RRSet(name=name, type="A", ttl=60, records=(f"127.0.60.{n}",))
            for n, name in enumerate(names)]
    refused = RRSet(name=f"batch-bad.{LAB_ZONE}", type="A", ttl=60, records=("not-an-address",))

    async def write(rrsets: list[RRSet]) -> None:
        async with _adapter(pdns) as adapter:
            await adapter.apply([RRSetChange(before=None, after=r) for r in rrsets])

    with pytest.raises(DnsError):
        asyncio.run(write([*good, refused]))
    zone = _observe(pdns)
    assert not any((name, "A") in zone for name in [*names, refused.name])

    asyncio.run(write(good))
    zone = _observe(pdns)
    assert [zone[(name, "A")].records for name in names] == [r.records for r in good]
