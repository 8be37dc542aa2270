"""``coder-migrate dns check`` against real servers: green per region, fail-over, mismatches.

A private PowerDNS 4.7 (LUA records, EDNS Client Subnet, a 1 s health-check interval and the
GeoIP backend with a MaxMind database written here) serves the lab zone, so these tests
control every region's health endpoint and never touch the shared lab. The inventories are
copies of ``inventories/lab`` pointed at the private servers; the records are applied with
the engine's own DNS plan, and the check runs through the real command line.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from coder_migrate.cli import main
from coder_migrate.dns import apply_dns_changes, open_adapter, plan_dns
from coder_migrate.inventory import Topology, load_topology
from tests.fixtures.dns import (
    BindServer,
    HealthEndpoint,
    PowerDnsServer,
    free_loopback_port,
    write_test_mmdb,
)
from tests.fixtures.lab import LabHandle
from tests.helpers import REPO, copy_inventory, edit_yaml

pytestmark = pytest.mark.integration

ZONE = "lab.coder-migrate.test"
SHARED = f"coder.{ZONE}"
PRIMARY_TARGET = "127.0.0.1"
TARGETS = {"us-east": "127.0.1.1", "eu-west": "127.0.1.2", "ap-southeast": "127.0.1.3"}
# Clients the test's GeoIP database places in a country, outside every region's subnets.
GEO_CLIENTS: dict[str, tuple[str, str, str]] = {
    "100.64.11.0/24": ("IE", "EU", "eu-west"),
    "100.64.12.0/24": ("US", "NA", "us-east"),
    "100.64.13.0/24": ("SG", "AS", "ap-southeast"),
}
GEO_CLIENT_OPTIONS = [
    f"--geo-client={country}={subnet.replace('.0/24', '.9/32')}"
    for subnet, (country, _, _) in GEO_CLIENTS.items()
]
CLI = REPO / ".venv" / "bin" / "coder-migrate"


@pytest.fixture(scope="module")
def geo_pdns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerDnsServer]:
    directory = tmp_path_factory.mktemp("pdns-check")
    database = write_test_mmdb(directory / "check.mmdb", GEO_CLIENTS)
    server = PowerDnsServer(directory / "server", zone=ZONE, geoip_database=database)
    try:
        server.start()
    except Exception as error:
        pytest.fail(f"PowerDNS for dns check did not start: {error}")
    yield server
    server.stop()


@dataclass
class Deployment:
    inventory: Path
    server: PowerDnsServer
    health: dict[str, HealthEndpoint]

    @property
    def topology(self) -> Topology:
        return load_topology(self.inventory)


def _point_at(inventory: Path, dns: dict[str, Any], health_port: int) -> None:
    def set_dns(data: dict[str, Any]) -> None:
        data["coder_dns"] = {**data["coder_dns"], **dns}

    edit_yaml(inventory / "group_vars" / "all" / "coder.yml", set_dns)
    for region, target in TARGETS.items():
        edit_yaml(
            inventory / "host_vars" / f"{region}.yml",
            lambda data, target=target: data.update(
                coder_access_url=f"http://{target}:{health_port}"
            ),
        )


@pytest.fixture
def deployment(geo_pdns: PowerDnsServer, tmp_path: Path) -> Iterator[Deployment]:
    """A copy of the lab inventory on the private PowerDNS, its records applied, health up."""
    geo_pdns.reset_zone()
    key_file = tmp_path / "pdns-api-key"
    key_file.write_text(geo_pdns.api_key)
    key_file.chmod(0o600)  # inventory validation refuses a secret file others can read
    inventory = copy_inventory(tmp_path, REPO / "inventories" / "lab")
    port = free_loopback_port()
    _point_at(
        inventory,
        {
            "provider": "powerdns",
            "powerdns": {
                "api_url": geo_pdns.api_url,
                "api_key": {"file": str(key_file)},
                "nameservers": [geo_pdns.nameserver],
            },
        },
        port,
    )
    health = {name: HealthEndpoint(target, port) for name, target in TARGETS.items()}
    for endpoint in health.values():
        endpoint.start()
    deployment = Deployment(inventory, geo_pdns, health)
    _apply(deployment.topology)
    yield deployment
    for endpoint in health.values():
        endpoint.stop()


def _apply(topology: Topology) -> None:
    async def run() -> None:
        async with open_adapter(topology) as adapter:
            plan = await plan_dns(topology, adapter)
            await apply_dns_changes(adapter, plan.changes)

    asyncio.run(run())


def _check(inventory: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["dns", "check", "-i", str(inventory), *args])


def _report(result: Result) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_check_is_green_from_every_region_subnet_and_country(deployment: Deployment) -> None:
    # Health checks start at a region's first query: --wait covers the first interval.
    result = _check(deployment.inventory, "--wait", "10", "--output", "json", *GEO_CLIENT_OPTIONS)
    assert result.exit_code == 0, result.output
    report = _report(result)
    assert report["ok"] and report["geo_routing"] and report["geoip"]
    assert report["servers"] == [deployment.server.nameserver]
    got = {(r["region"], r["name"], r["client_subnet"]): r["got"] for r in report["results"]}
    for region, target in TARGETS.items():
        own = f"coder-{region}.{ZONE}"
        subnet = next(r.geo.test_subnets[0] for r in deployment.topology.regions
                      if r.name == region)
        assert got[(region, own, subnet)] == [target]
        assert got[(region, f"coder-migrate-check.{own}", subnet)] == [target]
        assert got[(region, SHARED, subnet)] == [target]
    by_country = {r["country"]: r["got"] for r in report["results"] if r["country"]}
    assert by_country == {"IE": ["127.0.1.2"], "US": ["127.0.1.1"], "SG": ["127.0.1.3"]}
    assert len(report["results"]) == 3 * 3 + 3

    table = _check(deployment.inventory, *GEO_CLIENT_OPTIONS)
    assert table.exit_code == 0, table.output
    assert "12/12 right" in table.stdout
    assert "WRONG" not in table.stdout


def test_limit_checks_only_the_named_regions(deployment: Deployment) -> None:
    result = _check(deployment.inventory, "--limit", "us-east", "--wait", "10", "--output", "json")
    assert result.exit_code == 0, result.output
    assert {r["region"] for r in _report(result)["results"]} == {"us-east"}


def test_a_region_down_fails_over_and_plain_check_names_it(deployment: Deployment) -> None:
    assert _check(deployment.inventory, "--wait", "10").exit_code == 0
    interval = deployment.server.health_check_interval
    deployment.health["eu-west"].stop()
    started = time.monotonic()
    down = _check(
        deployment.inventory, "--expect-down", "eu-west", "--wait", str(3 * interval + 2),
        "--output", "json", "--geo-client", "IE=100.64.11.9/32",
    )
    elapsed = time.monotonic() - started
    assert down.exit_code == 0, down.output
    assert elapsed <= 3 * interval + 2 + 1
    shared = {(r["region"], r["country"]): r["got"] for r in _report(down)["results"]
              if r["name"] == SHARED}
    assert shared[("eu-west", None)] == [PRIMARY_TARGET]
    assert shared[("eu-west", "IE")] == [PRIMARY_TARGET]
    assert shared[("us-east", None)] == ["127.0.1.1"]

    plain = _check(deployment.inventory)
    assert plain.exit_code == 5
    error = plain.stderr.strip().splitlines()
    assert len(error) == 1, plain.stderr
    assert "in region(s) eu-west " in error[0]
    assert f"A {SHARED} to 203.0.113.1/32 with {PRIMARY_TARGET}, expected 127.0.1.2" in error[0]

    # Back up: the region answers again, and expecting it down is now the wrong claim.
    deployment.health["eu-west"].start()
    assert _check(deployment.inventory, "--wait", str(3 * interval + 2)).exit_code == 0
    assert _check(deployment.inventory, "--expect-down", "eu-west").exit_code == 5


def test_a_record_changed_behind_our_back_fails_naming_the_region(
    deployment: Deployment,
) -> None:
    assert _check(deployment.inventory, "--wait", "10").exit_code == 0
    deployment.server.put_rrset(f"coder-ap-southeast.{ZONE}", "A", 60, ["127.0.77.7"])
    result = _check(deployment.inventory, "--output", "json")
    assert result.exit_code == 5
    report = _report(result)
    assert report["failed_regions"] == ["ap-southeast"]
    wrong = [r for r in report["results"] if not r["ok"]]
    assert [(r["name"], r["got"], r["expected"]) for r in wrong] == [
        (f"coder-ap-southeast.{ZONE}", ["127.0.77.7"], ["127.0.1.3"])
    ]
    assert "in region(s) ap-southeast " in result.stderr
    assert "WRONG" in _check(deployment.inventory).stdout


@pytest.mark.parametrize(
    ("args", "exit_code", "expected"),
    [
        (["--limit", "nowhere"], 3,
         "--limit nowhere: expected one of the inventory's regions (us-east, eu-west, "
         "ap-southeast)"),
        (["--expect-down", "mars"], 3, "--expect-down mars: expected one of the inventory's"),
        (["--server", "localhost"], 3, "server localhost: expected host:port"),
        (["--geo-client", "Ireland"], 3, "--geo-client Ireland: expected COUNTRY=SUBNET"),
        (["--geo-client", "BR=100.64.14.1/32"], 3,
         "--geo-client BR=100.64.14.1/32: expected a country listed in some region's"),
        (["--geo-client", "IE=203.0.113.1/32"], 3,
         "expected a client outside every coder_geo.subnets (it is in eu-west's"),
    ],
    ids=["unknown-limit", "unknown-down", "server-format", "geo-format", "geo-unserved",
         "geo-in-subnet"],
)
def test_bad_input_is_one_clear_line(
    deployment: Deployment, args: list[str], exit_code: int, expected: str
) -> None:
    result = _check(deployment.inventory, *args)
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert result.stdout == ""


def test_an_unreachable_server_is_one_clear_line(deployment: Deployment) -> None:
    dead = f"127.0.0.1:{free_loopback_port()}"
    process = subprocess.run(
        [str(CLI), "dns", "check", "-i", str(deployment.inventory), "--server", dead,
         "--timeout", "0.5"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert process.returncode == 5, process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("error: dns check: ") and dead in lines[0], lines[0]
    assert deployment.server.api_key not in process.stdout + process.stderr


def test_without_geo_routing_only_names_are_checked_and_the_output_says_so(
    tmp_path: Path,
) -> None:
    bind = BindServer(tmp_path / "bind", zone=ZONE)
    try:
        bind.start()
    except Exception as error:
        pytest.fail(f"BIND for dns check did not start: {error}")
    try:
        secret_file = tmp_path / "tsig-secret"
        secret_file.write_text(bind.secret)
        secret_file.chmod(0o600)
        inventory = copy_inventory(tmp_path, REPO / "inventories" / "lab")
        _point_at(
            inventory,
            {
                "provider": "rfc2136",
                "powerdns": None,
                "rfc2136": {
                    "server": bind.nameserver,
                    "tsig_key_name": bind.key_name,
                    "tsig_algorithm": bind.algorithm,
                    "tsig_secret": {"file": str(secret_file)},
                },
            },
            free_loopback_port(),
        )
        edit_yaml(inventory / "group_vars" / "all" / "coder.yml",
                  lambda data: data["coder_dns"].pop("powerdns"))
        _apply(load_topology(inventory))

        result = _check(inventory)
        assert result.exit_code == 0, result.output
        assert "provider rfc2136 has no geo routing" in result.stdout
        report = _report(_check(inventory, "--output", "json"))
        every = sorted([PRIMARY_TARGET, *TARGETS.values()])
        assert not report["geo_routing"]
        assert {tuple(r["got"]) for r in report["results"] if r["name"] == SHARED} == {
            tuple(every)
        }

        down = _check(inventory, "--expect-down", "eu-west")
        assert down.exit_code == 3
        assert "provider rfc2136 has no geo routing or health checks" in down.stderr
    finally:
        bind.stop()


def test_country_clients_on_the_lab_powerdns_without_geoip_are_refused(lab: LabHandle) -> None:
    """The lab's PowerDNS has no GeoIP database: asking by country is refused before any query."""
    result = _check(REPO / "inventories" / "lab", "--geo-client", "IE=100.64.11.9/32")
    assert result.exit_code == 3, result.output
    assert result.stderr.strip() == (
        "error: --geo-client: the powerdns server has no GeoIP database, so no answer depends "
        "on a client's country"
    )
