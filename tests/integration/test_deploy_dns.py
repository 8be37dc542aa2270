"""plan / apply with DNS on the lab: region records and the shared LUA record in PowerDNS.

A copy of inventories/lab (v1, its own tag and loopback block 127.0.13.x, a private Coder
v1.21 emulator as its primary) is deployed with DNS. The satellites are the bundled proxy
the lab runs for each release, so PowerDNS' ``ifurlup`` health checks of the shared record
probe real servers, and ``dns check`` asks the lab's PowerDNS as each region's clients.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.coderd import CoderEmulator, EmulatorFactory
from tests.fixtures.lab import LabHandle
from tests.helpers import lab_inventory
from tests.integration.test_deploy import REGIONS, delete_tagged_namespaces, run_cli

pytestmark = pytest.mark.integration

ADDRESS_BLOCK = 13
# inventories/lab's coder_geo.test_subnets of us-east, eu-west, ap-southeast (REGIONS' order).
TEST_SUBNETS = ("198.51.100.1/32", "203.0.113.1/32", "192.0.2.1/32")


def _zone_url(lab: LabHandle) -> str:
    endpoints = lab.endpoints
    return (f"{endpoints.powerdns_api_url}/api/v1/servers/{endpoints.powerdns_server_id}"
            f"/zones/{endpoints.zone.rstrip('.')}.")


def tagged_rrsets(lab: LabHandle, tag: str) -> dict[tuple[str, str], list[str]]:
    """The zone's rrsets whose name carries *tag*: (name, type) -> record contents."""
    response = httpx.get(_zone_url(lab), headers={"X-API-Key": lab.pdns_api_key}, timeout=10)
    response.raise_for_status()
    return {
        (r["name"].rstrip("."), r["type"]): sorted(record["content"] for record in r["records"])
        for r in response.json()["rrsets"] if tag in r["name"]
    }


def delete_tagged_rrsets(lab: LabHandle, tag: str) -> None:
    """Remove what the test wrote: every rrset (markers included) whose name has *tag*."""
    deletes = [
        {"name": f"{name}.", "type": rtype, "changetype": "DELETE"}
        for name, rtype in tagged_rrsets(lab, tag)
    ]
    if deletes:
        httpx.patch(_zone_url(lab), json={"rrsets": deletes},
                    headers={"X-API-Key": lab.pdns_api_key}, timeout=10).raise_for_status()


@pytest.fixture
def dns_world(lab: LabHandle, coderd_factory: EmulatorFactory, tmp_path: Path) -> Iterator[
    tuple[Path, str, CoderEmulator]
]:
    emulator = coderd_factory("v1.21")
    tag = f"dn{os.getpid() % 1000}"
    inventory = lab_inventory(
        tmp_path, tag=tag, address_block=ADDRESS_BLOCK, primary_url=emulator.url,
        token_file=emulator.token_file,
    )
    try:
        yield inventory, tag, emulator
    finally:
        try:
            delete_tagged_rrsets(lab, tag)
        finally:
            delete_tagged_namespaces(lab, tag)


def _plan(inventory: Path, *extra: str) -> dict[str, Any]:
    result = run_cli("plan", "-i", str(inventory), "--output", "json", *extra)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_deploy_with_dns_writes_region_records_and_the_shared_lua_record(
    lab: LabHandle, dns_world: tuple[Path, str, CoderEmulator]
) -> None:
    inventory, tag, _ = dns_world
    zone = lab.endpoints.zone.rstrip(".")
    shared = f"coder-{tag}.{zone}"

    # --limit eu-west: eu-west's own records only (not the shared one, not other regions').
    limited = _plan(inventory, "--limit", "eu-west")
    assert [w["name"] for w in limited["waves"]] == ["regions", "dns"]
    dns_changes = [c for c in limited["waves"][1]["changes"] if c["action"] != "keep"]
    assert dns_changes and {c["region"] for c in dns_changes} == {"eu-west"}
    assert all(f"eu-west-{tag}" in c["target"] for c in dns_changes)
    assert not any(c["target"].endswith(" " + shared) for c in dns_changes)

    plan = run_cli("plan", "-i", str(inventory), "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    headings = [line.split(" (")[0] for line in plan.stdout.splitlines()
                if line.startswith("wave ")]
    assert headings == ["wave primary", "wave canary us-east", "wave regions", "wave dns"]
    assert shared in plan.stdout and "LUA" in plan.stdout
    assert tagged_rrsets(lab, tag) == {}  # plan changed nothing

    applied = run_cli("apply", "-i", str(inventory), "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    # The DNS wave ended with its verify step: health checks warmed, answers awaited.
    assert "every region answers as planned" in applied.stderr, applied.stderr

    records = tagged_rrsets(lab, tag)
    for index, region in enumerate(REGIONS, start=1):
        address = [f"127.0.{ADDRESS_BLOCK}.{index}"]
        assert records[(f"coder-{region}-{tag}.{zone}", "A")] == address
        assert records[(f"*.coder-{region}-{tag}.{zone}", "A")] == address
        assert (f"_coder-migrate-a.coder-{region}-{tag}.{zone}", "TXT") in records
    (script,) = records[(shared, "LUA")]
    assert "ifurlup" in script
    assert all(f"127.0.{ADDRESS_BLOCK}.{i}" in script for i in (1, 2, 3))
    assert (f"_coder-migrate-lua.{shared}", "TXT") in records

    # Right after apply, with no waiting by the user: dns check (no --wait) is green, and
    # dig from every region's test subnet gets that region.
    check = run_cli("dns", "check", "-i", str(inventory), "--output", "json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["ok"]
    host, port = lab.endpoints.powerdns_dns
    for index, subnet in enumerate(TEST_SUBNETS, start=1):
        dig = subprocess.run(
            ["dig", f"@{host}", "-p", str(port), f"+subnet={subnet}", "+short", shared, "A"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        assert dig.stdout.split() == [f"127.0.{ADDRESS_BLOCK}.{index}"], (subnet, dig.stdout)

    again = run_cli("plan", "-i", str(inventory), "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout
