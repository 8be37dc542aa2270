"""What ``dns check`` expects, and how it reads its options, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from coder_migrate.dns.check import (
    CheckReport,
    CheckResult,
    check_servers,
    expectations,
    parse_geo_clients,
)
from coder_migrate.errors import ConfigError, DnsError
from coder_migrate.inventory.model import Topology
from coder_migrate.providers.dns import Capabilities
from tests.fixtures.dns import LAB_ZONE, PRIMARY_TARGET, lab_topology_data

SHARED = f"coder.{LAB_ZONE}"
PDNS = Capabilities(provider="powerdns", lua_records=True, client_subnet=True, geoip=True)
BIND = Capabilities(provider="rfc2136")
PDNS_SETTINGS = {
    "provider": "powerdns",
    "powerdns": {"api_url": "http://127.0.0.1:8081", "api_key": {"env": "K"},
                 "nameservers": ["127.0.0.1:5353", "[::1]:5353"]},
}


def _topology(settings: dict[str, Any] = PDNS_SETTINGS, edit: Any = None) -> Topology:
    data = lab_topology_data(settings, health_port=8443)
    if edit is not None:
        edit(data)
    return Topology.model_validate(data)


def _by(found: list[Any]) -> dict[tuple[str, str, str], tuple[str, ...]]:
    return {(e.region, e.name, e.country): e.expected for e in found}


def test_each_region_expects_its_name_wildcard_and_the_shared_name() -> None:
    found = _by(expectations(_topology(), PDNS))
    assert found[("eu-west", f"coder-eu-west.{LAB_ZONE}", "")] == ("127.0.1.1",)
    assert found[("eu-west", f"coder-migrate-check.coder-eu-west.{LAB_ZONE}", "")] == (
        "127.0.1.1",
    )
    assert found[("eu-west", SHARED, "")] == ("127.0.1.1",)
    assert len(found) == 9


def test_a_region_expected_down_gets_the_fallback_for_the_shared_name_only() -> None:
    found = _by(expectations(_topology(), PDNS, expect_down={"eu-west"},
                             geo_clients={"DE": "100.64.1.9/32"}))
    assert found[("eu-west", SHARED, "")] == (PRIMARY_TARGET,)
    assert found[("eu-west", SHARED, "DE")] == (PRIMARY_TARGET,)
    assert found[("eu-west", f"coder-eu-west.{LAB_ZONE}", "")] == ("127.0.1.1",)
    assert found[("us-east", SHARED, "")] == ("127.0.2.1",)


def test_a_primary_without_addresses_falls_back_to_every_region() -> None:
    def no_primary_targets(data: dict[str, Any]) -> None:
        data["primary"]["dns_targets"] = []

    found = _by(expectations(_topology(edit=no_primary_targets), PDNS, expect_down={"us-east"}))
    assert found[("us-east", SHARED, "")] == ("127.0.1.1", "127.0.2.1", "127.0.3.1")


def test_without_geo_routing_the_shared_name_answers_every_site() -> None:
    found = _by(expectations(_topology(), BIND))
    assert found[("ap-southeast", SHARED, "")] == (
        "127.0.1.1", "127.0.2.1", "127.0.3.1", PRIMARY_TARGET,
    )


def test_a_country_client_is_expected_at_the_first_region_listing_it() -> None:
    found = _by(expectations(_topology(), PDNS, regions={"ap-southeast"},
                             geo_clients={"SG": "100.64.3.9/32", "DE": "100.64.1.9/32"}))
    assert found[("ap-southeast", SHARED, "SG")] == ("127.0.3.1",)
    assert {region for region, _, _ in found} == {"ap-southeast"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["Ireland"], "--geo-client Ireland: expected COUNTRY=SUBNET"),
        (["IE=not-a-subnet"], "--geo-client IE=not-a-subnet: expected COUNTRY=SUBNET"),
        (["IRL=100.64.1.1"], "expected COUNTRY=SUBNET"),
    ],
)
def test_geo_clients_are_parsed_or_refused_in_one_line(values: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_geo_clients(values)


def test_geo_clients_are_normalised() -> None:
    assert parse_geo_clients(["ie=100.64.1.7"]) == {"IE": "100.64.1.7/32"}


def test_servers_come_from_the_provider_or_the_option() -> None:
    assert check_servers(_topology()) == ("127.0.0.1:5353", "[::1]:5353")
    assert check_servers(_topology(), ["10.0.0.1:53"]) == ("10.0.0.1:53",)
    zonefile = _topology({"provider": "zonefile", "zonefile": {"path": "zone"}})
    with pytest.raises(ConfigError, match="expected --server host:port"):
        check_servers(zonefile)
    with pytest.raises(ConfigError, match=r"server 10\.0\.0\.1: expected host:port"):
        check_servers(zonefile, ["10.0.0.1"])


def test_a_failed_report_names_the_regions_and_the_first_wrong_answer() -> None:
    found = expectations(_topology(), PDNS)
    results = tuple(
        CheckResult(e, "127.0.0.1:53",
                    ("127.0.9.9",) if e.region == "us-east" and e.name == SHARED else e.expected)
        for e in found
    )
    report = CheckReport(zone=LAB_ZONE, provider="powerdns", geo_routing=True, geoip=False,
                         servers=("127.0.0.1:53",), results=results)
    assert report.failed_regions == ("us-east",)
    with pytest.raises(DnsError) as caught:
        report.raise_if_failed()
    assert str(caught.value) == (
        f"dns check: 1 of 9 answers wrong in region(s) us-east (first: 127.0.0.1:53 answered "
        f"A {SHARED} to 198.51.100.1/32 with 127.0.9.9, expected 127.0.2.1)"
    )
    assert report.to_json()["failed_regions"] == ["us-east"]


def test_the_verified_operations_are_the_deploy_and_the_zone_alone() -> None:
    """apply verifies the DNS wave of the deploy and of the geodns role's zone-only plan (a
    migration checks its own DNS, a rollback restores older records): the names must stay one."""
    from coder_migrate.dns.verify import VERIFIED_OPERATIONS
    from coder_migrate.engine.run import DEPLOY, DEPLOY_WITHOUT_DNS, DNS
    from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION, ROLLBACK

    assert {DEPLOY, DNS} == VERIFIED_OPERATIONS
    assert not {DEPLOY_WITHOUT_DNS, MIGRATION, ROLLBACK} & VERIFIED_OPERATIONS
