"""The two front doors reach one state: ``ansible-playbook site.yml`` and ``coder-migrate
apply`` on the same inventory, each seeing the other's result as no change."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.coderd import CoderEmulator, EmulatorFactory
from tests.fixtures.lab import LabHandle
from tests.helpers import REPO, edit_yaml, lab_inventory, lab_v1_values
from tests.integration.test_deploy import delete_tagged_namespaces, run_cli, unique_tag

pytestmark = pytest.mark.integration

ZONE = "lab.coder-migrate.test."


def playbook(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", str(inventory), "playbooks/site.yml", *extra],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1"},
    )


def changed_counts(output: str) -> dict[str, int]:
    return {
        host: int(changed)
        for host, changed in re.findall(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", output, re.M)
    }


def delete_tagged_records(lab: LabHandle, tag: str) -> None:
    api = f"{lab.endpoints.powerdns_api_url}/api/v1/servers/localhost/zones/{ZONE}"
    headers = {"X-API-Key": lab.pdns_api_key}
    zone = httpx.get(api, headers=headers, timeout=10).json()
    doomed = [
        {"name": r["name"], "type": r["type"], "changetype": "DELETE"}
        for r in zone["rrsets"] if tag in r["name"]
    ]
    if doomed:
        httpx.patch(api, headers=headers, json={"rrsets": doomed}, timeout=10).raise_for_status()


@pytest.fixture
def world(
    lab: LabHandle, coderd_factory: EmulatorFactory, tmp_path: Path
) -> Iterator[tuple[Path, CoderEmulator]]:
    emulator = coderd_factory("v1.21")
    tag = unique_tag("dd")
    inventory = lab_inventory(
        tmp_path, tag=tag, address_block=15, primary_url=emulator.url,
        token_file=emulator.token_file,
    )
    yield inventory, emulator
    delete_tagged_namespaces(lab, tag)
    delete_tagged_records(lab, tag)


def test_playbook_and_cli_see_each_others_result_as_no_change(
    lab: LabHandle, world: tuple[Path, CoderEmulator]
) -> None:
    inventory, _ = world
    first = playbook(inventory)
    assert first.returncode == 0, first.stdout[-3000:]
    assert changed_counts(first.stdout)["us-east"] > 0

    plan = run_cli("plan", "-i", str(inventory), "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr

    # A change made through the CLI is no change to the playbook afterwards.
    edit_yaml(inventory / "host_vars" / "eu-west.yml",
              lambda d: d.update(coder_values=lab_v1_values({"coderd": {"trustProxyIP": True}})))
    applied = run_cli("apply", "-i", str(inventory), "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    assert "eu-west" in applied.stderr and "values differ" in applied.stderr

    second = playbook(inventory)
    assert second.returncode == 0, second.stdout[-3000:]
    counts = changed_counts(second.stdout)
    assert counts and all(changed == 0 for changed in counts.values()), second.stdout[-3000:]
