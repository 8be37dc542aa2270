"""Provider zonefile: the written file loads in BIND's own checker and re-plans empty."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from coder_migrate.dns import apply_dns_changes, plan_dns
from coder_migrate.dns.plan import DnsPlan
from coder_migrate.errors import DnsError
from coder_migrate.inventory.model import Topology
from coder_migrate.providers.dns import adapter_for
from tests.fixtures.dns import LAB_ZONE, PRIMARY_TARGET, REGIONS, lab_topology_data

pytestmark = pytest.mark.integration

EXISTING = f"""$ORIGIN {LAB_ZONE}.
$TTL 3600
@    IN SOA ns1.{LAB_ZONE}. hostmaster.{LAB_ZONE}. 7 3600 600 86400 60
@    IN NS  ns1.{LAB_ZONE}.
ns1  IN A   127.0.0.1
www  IN A   127.0.50.1
"""


def _topology(path: Path) -> Topology:
    return Topology.model_validate(
        lab_topology_data(
            {"provider": "zonefile", "zonefile": {"path": str(path)}}, health_port=443
        )
    )


def _plan_and_apply(topology: Topology) -> DnsPlan:
    async def run() -> DnsPlan:
        async with adapter_for(topology.dns) as adapter:
            plan = await plan_dns(topology, adapter)
            await apply_dns_changes(adapter, plan.changes)
            return plan

    return asyncio.run(run())


def test_zone_file_is_valid_for_bind_and_keeps_records_it_did_not_write(tmp_path: Path) -> None:
    path = tmp_path / "lab.test.zone"
    path.write_text(EXISTING, encoding="utf-8")
    topology = _topology(path)

    plan = _plan_and_apply(topology)

    assert any("geo routing is not available on provider zonefile" in n for n in plan.notes)
    text = path.read_text(encoding="utf-8")
    check = subprocess.run(
        ["named-checkzone", LAB_ZONE, str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"www.{LAB_ZONE}." in text and "127.0.50.1" in text
    every = [PRIMARY_TARGET, *(spec["target"] for spec in REGIONS.values())]
    shared_lines = [line for line in text.splitlines() if line.startswith(f"coder.{LAB_ZONE}.")]
    assert sorted(line.split()[-1] for line in shared_lines) == sorted(every)
    # Seed layout: the shared hostname's group comes before the regions' groups.
    assert text.index(f"; coder.{LAB_ZONE}: every developer") < text.index(
        f"; coder-eu-west.{LAB_ZONE}"
    )
    again = _plan_and_apply(topology)
    assert again.is_empty, [c.summary() for c in again.effective]
    assert path.read_text(encoding="utf-8") == text


def test_a_file_that_is_not_a_zone_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.zone"
    path.write_text("this is not { a zone\n", encoding="utf-8")
    with pytest.raises(DnsError, match=r"is not a valid zone file: .*unknown rdatatype 'is'"):
        _plan_and_apply(_topology(path))
    assert path.read_text(encoding="utf-8") == "this is not { a zone\n"
