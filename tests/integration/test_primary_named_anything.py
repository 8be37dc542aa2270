"""The primary is whichever host the ``coder_primary`` group holds, under any name (issue 14).

A copy of the lab inventory whose primary is called ``us-east`` and whose regions are
``virginia``, ``dublin`` and ``singapore`` goes through validate, ``site.yml``, plan,
apply, ``--limit`` of the primary, and the runbook, as the lab's own inventory does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.coderd import CoderEmulator, EmulatorFactory
from tests.fixtures.lab import LabHandle
from tests.helpers import lab_inventory
from tests.integration.test_deploy import delete_tagged_namespaces, run_cli, unique_tag
from tests.integration.test_deploy_two_doors import (
    changed_counts,
    delete_tagged_records,
    playbook,
)

pytestmark = pytest.mark.integration

ADDRESS_BLOCK = 19
RENAMED = {"primary": "us-east", "us-east": "virginia", "eu-west": "dublin",
           "ap-southeast": "singapore"}


def rename_hosts(inventory: Path) -> None:
    """Every host under a new name; the lab's region ``us-east`` becomes the primary's name."""
    hosts = inventory / "hosts.yml"
    data = yaml.safe_load(hosts.read_text(encoding="utf-8"))
    children = data["all"]["children"]
    for group in ("coder_primary", "coder_regions"):
        children[group]["hosts"] = {RENAMED[h]: None for h in children[group]["hosts"]}
    hosts.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    staged = {old: (inventory / "host_vars" / f"{old}.yml").read_text(encoding="utf-8")
              for old in RENAMED}
    for old in staged:
        (inventory / "host_vars" / f"{old}.yml").unlink()
    for old, text in staged.items():
        (inventory / "host_vars" / f"{RENAMED[old]}.yml").write_text(text, encoding="utf-8")


@pytest.fixture
def renamed(
    lab: LabHandle, coderd_factory: EmulatorFactory, tmp_path: Path
) -> Iterator[tuple[Path, CoderEmulator]]:
    emulator = coderd_factory("v1.21")
    tag = unique_tag("pn")
    inventory = lab_inventory(tmp_path, tag=tag, address_block=ADDRESS_BLOCK,
                              primary_url=emulator.url, token_file=emulator.token_file)
    rename_hosts(inventory)
    yield inventory, emulator
    delete_tagged_namespaces(lab, tag)
    delete_tagged_records(lab, tag)


def test_a_primary_named_us_east_is_the_primary_everywhere(
    lab: LabHandle, renamed: tuple[Path, CoderEmulator]
) -> None:
    inventory, _ = renamed
    validated = run_cli("inventory", "validate", "-i", str(inventory))
    assert validated.returncode == 0, validated.stdout + validated.stderr

    planned = run_cli("plan", "-i", str(inventory), "--output", "json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["waves"][0]["name"] == "primary"
    assert {c["region"] for c in plan["waves"][0]["changes"]} == {"us-east"}
    regions = {c["region"] for w in plan["waves"][1:] for c in w["changes"]}
    assert {"virginia", "dublin", "singapore"} <= regions
    only_primary = run_cli("plan", "-i", str(inventory), "--limit", "us-east", "--no-dns",
                           "--output", "json")
    assert only_primary.returncode == 0, only_primary.stderr
    assert {c["region"] for w in json.loads(only_primary.stdout)["waves"]
            for c in w["changes"]} == {"us-east"}

    # The playbook converges the primary (role coder_primary) and the regions ...
    converged = playbook(inventory)
    assert converged.returncode == 0, converged.stdout[-3000:]
    assert changed_counts(converged.stdout)["us-east"] > 0
    # ... and the CLI sees nothing left to do; applying again changes nothing.
    again = run_cli("plan", "-i", str(inventory), "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    applied = run_cli("apply", "-i", str(inventory), "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    assert "No changes" in applied.stdout
    status = run_cli("status", "-i", str(inventory), "--output", "json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert [row["site"] for row in json.loads(status.stdout)] == [
        "us-east", "virginia", "dublin", "singapore"]

    runbook = run_cli("runbook", "-i", str(inventory))
    assert runbook.returncode == 0, runbook.stderr
    for name in ("virginia", "dublin", "singapore", "shared and primary names"):
        assert name in runbook.stdout
