"""GeoDNS per generation, as `inventory validate` checks it (seeds 001, 003, 004).

v1: satellites proxy everything to the primary, so they must reach it by a name of its own
that no geo rule answers; the geo-routed shared name resolves, from inside a region, to the
nearest satellite, possibly the satellite itself. v2: proxies serve neither the dashboard
nor the API, so the primary's access URL must not be geo-routed. Each refusal is one line
naming the file and the key, exit 3, nothing changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from coder_migrate.cli import main
from coder_migrate.dns import desired_state
from coder_migrate.engine.values import release_values
from coder_migrate.inventory import load_topology
from coder_migrate.providers.dns import Capabilities
from tests.helpers import LAB_INVENTORY, copy_inventory, edit_yaml

ALL = "group_vars/all/coder.yml"
PDNS = Capabilities(provider="powerdns", lua_records=True, client_subnet=True)


def _refused(inventory: Path) -> str:
    before = {p: p.read_bytes() for p in inventory.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert before == {p: p.read_bytes() for p in inventory.rglob("*") if p.is_file()}
    return lines[0]


def _to_v2(data: dict[str, Any]) -> None:
    data["coder_generation"] = "v2"
    data["coder_version"] = "2.15.0"
    data["coder_chart"] = {"repo": "https://helm.coder.com/v2", "name": "coder",
                           "version": "2.15.0"}


def _v2(inventory: Path) -> None:
    edit_yaml(inventory / ALL, _to_v2)
    for host in ("us-east", "us-west", "eu-west", "ap-southeast", "australia-southeast1"):
        def drop(data: dict[str, Any]) -> None:
            data.pop("coder_workspace_providers", None)
            data.pop("coder_test_workspace", None)

        edit_yaml(inventory / "host_vars" / f"{host}.yml", drop)


@pytest.mark.parametrize("inventory", [Path("inventories/example"), LAB_INVENTORY],
                         ids=["example", "lab"])
def test_the_example_and_lab_primaries_have_a_name_of_their_own(inventory: Path) -> None:
    topology = load_topology(Path(__file__).resolve().parents[2] / inventory)
    primary = topology.primary
    assert primary.dns_name and primary.dns_name != topology.dns.shared_hostname
    assert primary.dns_name.startswith("coder-primary.")
    records = {d.rrset.key: d.rrset for d in desired_state(topology, PDNS).rrsets}
    assert records[(primary.dns_name, "A")].records == tuple(primary.dns_targets)
    satellite = release_values(topology, topology.regions[0])["coderd"]["satellite"]
    # The example dials the primary's own name; the lab's primary is an address (the
    # emulator on 127.0.0.1:17080), which no DNS answers, so it is dialled as it is.
    assert satellite["primaryURL"] == primary.own_url
    assert topology.dns.shared_hostname not in satellite["primaryURL"]


def test_a_v1_primary_without_its_own_name_is_refused(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    edit_yaml(inventory / "host_vars" / "primary.yml", lambda d: d.pop("coder_hostname"))
    line = _refused(inventory)
    # The key is missing, so the line names the file that declares the host.
    assert line.startswith("error: hosts.yml: primary: coder_hostname: expected the "
                           "primary's own DNS name, which no geo rule answers"), line
    assert "resolves to the nearest region, possibly the region itself" in line
    assert "found nothing (the access URL's host is coder.example.com)" in line


def test_a_satellite_primary_url_on_the_geo_name_is_refused(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    edit_yaml(inventory / "host_vars" / "eu-west.yml", lambda d: d.update(coder_values={
        "coderd": {"satellite": {"primaryURL": "https://coder.example.com"}}}))
    line = _refused(inventory)
    assert line.startswith("error: host_vars/eu-west.yml: eu-west: "
                           "coder_values.coderd.satellite.primaryURL: expected the primary's "
                           "own name (https://coder-primary.example.com), not the shared "
                           "hostname"), line
    assert "the satellite would proxy to a satellite, found https://coder.example.com" in line


def test_without_geo_routing_the_shared_name_is_the_primarys_and_allowed(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    edit_yaml(inventory / ALL, lambda d: d["coder_dns"].update(geo_routing=False))
    edit_yaml(inventory / "host_vars" / "primary.yml", lambda d: d.pop("coder_hostname"))
    topology = load_topology(inventory)
    assert not topology.geo_routed
    records = {d.rrset.key: d.rrset for d in desired_state(topology, PDNS).rrsets}
    assert records[("coder.example.com", "A")].records == ("192.0.2.10",)
    assert ("coder.example.com", "LUA") not in records


def test_a_v2_inventory_plans_no_geo_routed_shared_name(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    _v2(inventory)
    topology = load_topology(inventory)
    assert topology.generation == "v2" and not topology.geo_routed
    state = desired_state(topology, PDNS)
    records = {d.rrset.key: d.rrset for d in state.rrsets}
    assert not [key for key in records if key[1] == "LUA"]
    # Users open the primary's dashboard: the shared name answers the primary only; each
    # proxy has its own hostname and wildcard.
    assert records[("coder.example.com", "A")].records == ("192.0.2.10",)
    assert records[("coder-eu-west.example.com", "A")].records == ("203.0.113.11",)
    assert records[("*.coder-eu-west.example.com", "A")].records == ("203.0.113.11",)
    assert any("not geo-routed" in note for note in state.notes)


def test_a_v2_primary_access_url_on_a_geo_routed_name_is_refused(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    _v2(inventory)
    edit_yaml(inventory / ALL, lambda d: d["coder_dns"].update(geo_routing=True))
    line = _refused(inventory)
    assert line.startswith("error: host_vars/primary.yml: primary: coder_access_url: expected "
                           "the primary's own name, not the geo-routed shared hostname "
                           "coder.example.com"), line
    assert "workspace proxies serve neither the dashboard nor the API" in line


def test_a_v2_primary_on_its_own_name_may_opt_into_a_geo_routed_name(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    _v2(inventory)
    edit_yaml(inventory / ALL, lambda d: d["coder_dns"].update(geo_routing=True))
    edit_yaml(inventory / "host_vars" / "primary.yml",
              lambda d: d.update(coder_access_url="https://coder-primary.example.com"))
    records = {d.rrset.key for d in desired_state(load_topology(inventory), PDNS).rrsets}
    assert ("coder.example.com", "LUA") in records
