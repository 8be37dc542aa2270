"""The DNS verify step as the DNS wave's gate in the one runner, without a cluster or a DNS
server: it runs once per wave (not once per rrset) for the regions the wave changed, with
apply's --dns-verify-timeout and progress, only for the operations whose DNS wave writes what
the inventory asks for, and its failure stops the apply (exit 7). The answers themselves are
asked of a real PowerDNS in tests/integration/test_dns_verify.py and test_deploy_dns.py."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import pytest

from coder_migrate.dns import rrset_change
from coder_migrate.dns.rrset_change import DnsRRSetChange
from coder_migrate.dns.verify import VerifyOutcome
from coder_migrate.engine.apply import ApplyOptions, apply_operation
from coder_migrate.engine.change import Action, ApplyContext
from coder_migrate.engine.plan import Plan, Wave
from coder_migrate.errors import ApplyError
from coder_migrate.inventory import Topology, load_topology
from coder_migrate.providers.dns.base import RRSet
from tests.fakes import FakeEngine
from tests.helpers import EXAMPLE_INVENTORY

ZONE = "example.com"


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(EXAMPLE_INVENTORY)


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every call of the verify step; the rrsets' writes are recorded instead of sent."""
    calls: list[dict[str, Any]] = []

    async def act(self: DnsRRSetChange, ctx: ApplyContext) -> str:
        return f"{self.target}: applied"

    async def verify(topology: Topology, wave_regions: Collection[str], *, timeout: float,
                     progress: Any = None) -> VerifyOutcome:
        calls.append({"regions": set(wave_regions), "timeout": timeout, "progress": progress})
        if "eu-west" in wave_regions and timeout < 1:
            raise ApplyError("DNS answers not as planned after 0 s: eu-west: A answered nothing")
        return VerifyOutcome(problems=(), answers=3)

    monkeypatch.setattr(DnsRRSetChange, "act", act)
    monkeypatch.setattr(rrset_change, "raise_unless_verified", verify)
    return calls


def rrset(region: str, name: str) -> DnsRRSetChange:
    written = RRSet(name=f"{name}.{ZONE}", type="A", ttl=60, records=("192.0.2.10",))
    return DnsRRSetChange(id=f"{region}/DnsRRSet/A/{written.name}", region=region,
                          action=Action.CREATE, target=f"A {written.name}", reason="test",
                          after=written)


def apply(topology: Topology, operation: str, changes: list[DnsRRSetChange],
          options: ApplyOptions) -> list[str]:
    plan = Plan.build(inventory="inv", operation=operation, waves=[Wave(
        name="dns", regions=tuple(dict.fromkeys(c.region for c in changes)),
        changes=tuple(changes))])

    async def compute() -> Plan:
        return plan

    _, report = asyncio.run(apply_operation(
        FakeEngine(topology), operation, compute, options))  # type: ignore[arg-type]
    return report.done


def test_once_per_wave_for_the_regions_it_changed(
    topology: Topology, verified: list[dict[str, Any]]
) -> None:
    lines: list[tuple[str, str, str]] = []
    changes = [rrset("eu-west", "coder-eu-west"), rrset("eu-west", "*.coder-eu-west"),
               rrset("ap-southeast", "coder-ap-southeast")]
    done = apply(topology, "deploy", changes, ApplyOptions(
        dns_verify_timeout=42, progress=lambda *line: lines.append(line)))
    assert len(done) == 3
    assert len(verified) == 1, "one verify step for the wave, not one per rrset"
    assert verified[0]["regions"] == {"eu-west", "ap-southeast"}
    assert verified[0]["timeout"] == 42 and verified[0]["progress"] is not None


def test_the_primary_s_records_are_named_by_its_host(
    topology: Topology, verified: list[dict[str, Any]]
) -> None:
    primary = topology.primary.name
    apply(topology, "dns", [rrset(primary, "coder")], ApplyOptions())
    assert verified[0]["regions"] == {primary}


@pytest.mark.parametrize("operation", ["deploy-without-dns", "v1.20-to-v1.21",
                                       "v1.20-to-v1.21-rollback"])
def test_other_operations_write_dns_without_the_verify_step(
    topology: Topology, verified: list[dict[str, Any]], operation: str
) -> None:
    assert apply(topology, operation, [rrset("eu-west", "coder-eu-west")], ApplyOptions())
    assert verified == []


def test_switched_off_it_is_not_run(topology: Topology, verified: list[dict[str, Any]]) -> None:
    assert apply(topology, "dns", [rrset("eu-west", "coder-eu-west")],
                 ApplyOptions(dns_verify_timeout=None))
    assert verified == []


def test_a_region_still_wrong_stops_the_apply_naming_it(
    topology: Topology, verified: list[dict[str, Any]]
) -> None:
    with pytest.raises(ApplyError) as caught:
        apply(topology, "deploy", [rrset("eu-west", "coder-eu-west")],
              ApplyOptions(dns_verify_timeout=0))
    assert caught.value.exit_code == 7
    assert str(caught.value).startswith(
        "wave 'dns' stopped: DNS answers not as planned after 0 s: eu-west: ")
    assert caught.value.done == [f"eu-west/DnsRRSet/A/coder-eu-west.{ZONE}"]
