"""The Route 53 shape of the shared hostname: one ``GEO`` rrset whose lines are geolocation
record sets, from the inventory alone (same inventory, same text: a re-plan is empty)."""

from __future__ import annotations

from typing import Any

import pytest

from coder_migrate.dns import GeoOptions, desired_state
from coder_migrate.errors import DnsError
from coder_migrate.inventory.model import Topology
from coder_migrate.providers.dns import Capabilities
from coder_migrate.providers.dns.route53 import GeoRecord, check_config, check_url, location_of
from tests.fixtures.dns import LAB_ZONE, PRIMARY_TARGET, lab_topology_data

ROUTE53 = Capabilities(provider="route53", geolocation=True, client_subnet=True, geoip=True)
SHARED = f"coder.{LAB_ZONE}"


def _geo_lines(edit: Any = None) -> tuple[str, ...]:
    data = lab_topology_data({"provider": "route53", "route53": {}}, health_port=443)
    if edit is not None:
        edit(data)
    state = desired_state(Topology.model_validate(data), ROUTE53)
    return {d.rrset.key: d.rrset for d in state.rrsets}[(SHARED, "GEO")].records


def test_countries_then_continents_each_with_the_regions_check_and_a_default() -> None:
    lines = _geo_lines()
    check = f"http://coder-eu-west.{LAB_ZONE}:443/cem-healthz"
    assert f"A eu-west/country=DE 127.0.1.1 check={check}" in lines
    assert f"A eu-west/continent=EU 127.0.1.1 check={check}" in lines
    assert f"A primary/default {PRIMARY_TARGET}" in lines
    assert len(lines) == 1 + 4 + 3  # default, DE FR US SG, EU NA AS


def test_the_first_region_listing_a_location_gets_it() -> None:
    def both_in_de(data: dict[str, Any]) -> None:
        data["regions"][1]["geo"]["countries"] = ["DE", "US"]

    lines = _geo_lines(both_in_de)
    (de,) = [line for line in lines if "country=DE" in line]
    assert de.startswith("A eu-west/")


def test_without_health_checks_the_lines_carry_none() -> None:
    data = lab_topology_data({"provider": "route53", "route53": {}}, health_port=443)
    state = desired_state(Topology.model_validate(data), ROUTE53, GeoOptions(health_check="none"))
    lines = {d.rrset.key: d.rrset for d in state.rrsets}[(SHARED, "GEO")].records
    assert not any("check=" in line for line in lines)


@pytest.mark.parametrize("line", [
    "A eu-west/country=DE 127.0.1.1 check=https://coder-eu-west.example.com/cem-healthz",
    "AAAA primary/default 2001:db8::1,2001:db8::2",
])
def test_a_line_reads_back_as_itself(line: str) -> None:
    assert GeoRecord.parse(line).text() == line


def test_a_line_of_another_shape_is_refused() -> None:
    with pytest.raises(DnsError, match="not a geolocation record line"):
        GeoRecord.parse("A 127.0.0.1")


def test_geolocations_and_their_locations_agree() -> None:
    for location in ("default", "continent=EU", "country=IE"):
        record = GeoRecord("A", "eu-west", location, ("192.0.2.1",))
        assert location_of(record.geolocation()) == location


def test_check_urls_read_back_in_one_form() -> None:
    for url in ("https://coder-eu-west.example.com/cem-healthz",
                "http://coder-eu-west.example.com:8080/healthz"):
        assert check_url(check_config(url, 30)) == url
    assert check_url(check_config("https://x.example.com:443/healthz", 30)) == \
        "https://x.example.com/healthz"
    assert check_config("https://x.example.com/healthz", 10)["EnableSNI"] is True
