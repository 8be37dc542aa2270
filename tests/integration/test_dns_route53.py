"""Route 53 through boto3 against moto's server mode (``moto_server``, a real HTTP endpoint on
loopback that the test starts): plan, apply, re-plan empty, change one region, rollback.

The shared hostname becomes geolocation record sets per region and location, each carrying
the region's health check (``/cem-healthz`` on the region's own hostname, v1), and a default
record set answering the primary. The access keys are references to environment variables
and never appear in a plan, a snapshot or an error.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from coder_migrate.dns import apply_dns_changes, open_adapter, plan_dns, restore_dns_changes
from coder_migrate.dns.plan import DnsPlan
from coder_migrate.engine.plan import Action
from coder_migrate.errors import DnsError
from coder_migrate.inventory.model import Topology
from tests.fixtures.dns import (
    LAB_ZONE,
    PRIMARY_TARGET,
    REGIONS,
    free_loopback_port,
    lab_topology_data,
)

pytestmark = pytest.mark.integration

SHARED = f"coder.{LAB_ZONE}"
KEY_ID = "AKIACODERMIGRATETEST"
SECRET = "r53-Secret-Value-7f3c9a1e5b2d4c6e8a0b1c2d3e4f5a6b"
STARTUP_SECONDS = 30.0


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``moto_server`` in its own process on a loopback port; its URL."""
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    assert binary, "moto_server not installed (pip install 'moto[server]')"
    port = free_loopback_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        assert process.poll() is None, "moto_server exited"
        try:
            if httpx.get(f"{url}/moto-api/", timeout=1).status_code < 500:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"moto_server did not answer in {STARTUP_SECONDS}s"
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=10)
    log.close()


@pytest.fixture
def route53(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh hosted zone for the lab zone, and the keys in the environment (by reference)."""
    monkeypatch.setenv("R53_KEY_ID", KEY_ID)
    monkeypatch.setenv("R53_SECRET", SECRET)
    client = boto3.client("route53", endpoint_url=moto_server, region_name="us-east-1",
                          aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    httpx.post(f"{moto_server}/moto-api/reset")
    client.create_hosted_zone(Name=LAB_ZONE + ".", CallerReference=str(time.time()))
    return client


def _topology(endpoint: str, edit: Any = None) -> Topology:
    data = lab_topology_data(
        {"provider": "route53", "route53": {
            "endpoint_url": endpoint,
            "access_key_id": {"env": "R53_KEY_ID"},
            "secret_access_key": {"env": "R53_SECRET"},
        }},
        health_port=8443,
    )
    if edit is not None:
        edit(data)
    return Topology.model_validate(data)


def _plan(topology: Topology) -> DnsPlan:
    async def run() -> DnsPlan:
        async with open_adapter(topology) as adapter:
            return await plan_dns(topology, adapter)

    return asyncio.run(run())


def _apply(topology: Topology, plan: DnsPlan) -> list[str]:
    async def run() -> list[str]:
        async with open_adapter(topology) as adapter:
            return await apply_dns_changes(adapter, plan.changes)

    return asyncio.run(run())


def _restore(topology: Topology, plan: DnsPlan) -> list[str]:
    async def run() -> list[str]:
        async with open_adapter(topology) as adapter:
            return await restore_dns_changes(adapter, plan.effective)

    return asyncio.run(run())


def _zone_id(client: Any) -> str:
    return str(client.list_hosted_zones()["HostedZones"][0]["Id"])


def _geo_sets(client: Any) -> dict[str, dict[str, Any]]:
    sets = client.list_resource_record_sets(HostedZoneId=_zone_id(client))["ResourceRecordSets"]
    return {s["SetIdentifier"]: s for s in sets
            if s["Name"] == SHARED + "." and "SetIdentifier" in s}


def _checks(client: Any) -> dict[str, dict[str, Any]]:
    return {c["Id"]: c["HealthCheckConfig"] for c in client.list_health_checks()["HealthChecks"]}


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


def test_create_replan_empty_change_one_region_and_roll_back(
    route53: Any, moto_server: str
) -> None:
    topology = _topology(moto_server)
    first = _plan(topology)
    assert not first.is_empty and first.provider == "route53"
    assert any("coder_geo.subnets are not used by provider route53" in n for n in first.notes)
    _apply(topology, first)

    sets = _geo_sets(route53)
    eu = REGIONS["eu-west"]
    assert sets["primary/default"]["GeoLocation"] == {"CountryCode": "*"}
    assert sets["primary/default"]["ResourceRecords"] == [{"Value": PRIMARY_TARGET}]
    assert "HealthCheckId" not in sets["primary/default"]
    de = sets["eu-west/country=DE"]
    assert de["GeoLocation"] == {"CountryCode": "DE"}
    assert de["ResourceRecords"] == [{"Value": eu["target"]}]
    assert sets["eu-west/continent=EU"]["GeoLocation"] == {"ContinentCode": "EU"}
    checks = _checks(route53)
    assert len(checks) == 3
    assert checks[de["HealthCheckId"]]["FullyQualifiedDomainName"] == f"coder-eu-west.{LAB_ZONE}"
    assert checks[de["HealthCheckId"]]["ResourcePath"] == "/cem-healthz"
    assert checks[de["HealthCheckId"]]["Port"] == 8443

    assert _plan(topology).is_empty, [c.summary() for c in _plan(topology).effective]

    def move_eu_west(data: dict[str, Any]) -> None:
        data["regions"][0]["dns_targets"] = ["127.0.1.9"]

    moved = _topology(moto_server, move_eu_west)
    second = _plan(moved)
    assert sorted(c.target for c in second.effective) == [
        f"A *.coder-eu-west.{LAB_ZONE}", f"A coder-eu-west.{LAB_ZONE}", f"GEO {SHARED}",
    ]
    assert all(c.action is Action.UPDATE and not c.needs_force for c in second.effective)
    _apply(moved, second)
    sets = _geo_sets(route53)
    assert sets["eu-west/country=DE"]["ResourceRecords"] == [{"Value": "127.0.1.9"}]
    us = REGIONS["us-east"]["target"]
    assert sets["us-east/country=US"]["ResourceRecords"] == [{"Value": us}]
    assert len(_checks(route53)) == 3
    assert _plan(moved).is_empty

    _restore(moved, second)
    assert _geo_sets(route53)["eu-west/country=DE"]["ResourceRecords"] == [{"Value": eu["target"]}]
    assert _plan(topology).is_empty
    _restore(topology, first)
    assert _geo_sets(route53) == {}
    assert _checks(route53) == {}, "the health checks this deployment made are gone"
    _no_secret(first.changes[0].model_dump_json(), json.dumps([c.model_dump(mode="json")
                                                               for c in second.changes]))


def test_records_of_others_are_left_alone(route53: Any, moto_server: str) -> None:
    route53.change_resource_record_sets(HostedZoneId=_zone_id(route53), ChangeBatch={"Changes": [{
        "Action": "CREATE", "ResourceRecordSet": {
            "Name": f"coder-us-east.{LAB_ZONE}.", "Type": "A", "TTL": 300,
            "ResourceRecords": [{"Value": "192.0.2.99"}]}}]})
    topology = _topology(moto_server)
    plan = _plan(topology)
    kept = [c for c in plan.changes if c.action is Action.KEEP]
    assert [c.target for c in kept] == [f"A coder-us-east.{LAB_ZONE}"]
    _apply(topology, plan)
    sets = route53.list_resource_record_sets(HostedZoneId=_zone_id(route53))["ResourceRecordSets"]
    theirs = [s for s in sets if s["Name"] == f"coder-us-east.{LAB_ZONE}." and s["Type"] == "A"]
    assert theirs[0]["ResourceRecords"] == [{"Value": "192.0.2.99"}]


def test_a_missing_zone_is_one_line_without_the_secret(route53: Any, moto_server: str) -> None:
    topology = _topology(moto_server, lambda d: d["dns"].update(
        zone="elsewhere.test", shared_hostname="coder.elsewhere.test"))
    with pytest.raises(DnsError) as caught:
        asyncio.run(_observe(topology))
    assert caught.value.message == f"Route 53 at {moto_server} has no hosted zone elsewhere.test"
    _no_secret(str(caught.value))


async def _observe(topology: Topology) -> None:
    async with open_adapter(topology) as adapter:
        await adapter.observe()
