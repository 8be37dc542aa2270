"""Rollback, status and crash recovery of the v1.20 -> v1.21 migration on the lab.

The world is test_migration.py's (a v1.21 emulator as the primary, the old workspace-provider
release in each region, no satellites), on its own address block and tag. DNS records the
tests write carry the tag and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coder_migrate.dns.plan import apply_dns_changes, open_adapter, plan_dns
from coder_migrate.engine.journal import Journal, JournalEntry
from coder_migrate.inventory import load_topology
from coder_migrate.migrations.v1_20_to_v1_21.retain import RETAINED_CONFIG_MAP
from coder_migrate.providers.coder import CoderV1Client
from coder_migrate.providers.dns.base import RRSet, RRSetChange
from coder_migrate.providers.kube import KubeCluster
from tests.fixtures.coderd import EmulatorFactory
from tests.fixtures.lab import Helm, LabHandle
from tests.helpers import REPO, edit_yaml
from tests.integration.test_deploy_dns import tagged_rrsets
from tests.integration.test_migration import (
    CLI,
    PROVIDER_RELEASE,
    REGIONS,
    MigrationWorld,
    _release_status,
    migration_world_at,
    run_cli,
)

pytestmark = pytest.mark.integration

ADDRESS_BLOCK = 16
ROLLED_BACK = "eu-west"
OLD_TARGET = f"127.0.{ADDRESS_BLOCK}.102"
"""Where eu-west's names pointed before the migration (its envproxy ingress)."""


@pytest.fixture
def world(
    lab: LabHandle, helm: Helm, coderd_factory: EmulatorFactory, tmp_path: Path
) -> Iterator[MigrationWorld]:
    with migration_world_at(lab, helm, coderd_factory, tmp_path, address_block=ADDRESS_BLOCK,
                            prefix="rb", install_providers=True) as migration_world:
        yield migration_world


def _point_region_at(inventory: Path, region: str, target: str) -> None:
    """Write *region*'s own records (with our markers) at *target*, as a deploy did before."""
    host_vars = inventory / "host_vars" / f"{region}.yml"
    saved = host_vars.read_text()
    edit_yaml(host_vars, lambda d: d.update(coder_dns_targets=[target]))
    try:
        topology = load_topology(inventory)

        async def write() -> None:
            async with open_adapter(topology) as adapter:
                dns = await plan_dns(topology, adapter)
                await apply_dns_changes(adapter, [c for c in dns.changes if c.region == region])

        asyncio.run(write())
    finally:
        host_vars.write_text(saved)


def _region_rrsets(lab: LabHandle, world: MigrationWorld, region: str) -> dict[Any, list[str]]:
    return {k: v for k, v in tagged_rrsets(lab, world.tag).items()
            if f"{region}-{world.tag}" in k[0]}


def _satellite_release(helm: Helm, world: MigrationWorld, region: str) -> str:
    listed = helm.run(f"lab-{region}", "list", "-n", world.satellite_namespace, "-a",
                      "-o", "json")
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    name = f"coder-sat-{world.tag}"
    return str(rows[name]["status"]) if name in rows else "absent"


def _status(world: MigrationWorld) -> dict[str, dict[str, str]]:
    shown = run_cli("migrate", "status", "-i", str(world.inventory), "--output", "json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return {r["region"]: r for r in json.loads(shown.stdout)["regions"]}


def test_rollback_of_one_region_restores_it_exactly_and_leaves_the_others(
    lab: LabHandle, helm: Helm, world: MigrationWorld
) -> None:
    _point_region_at(world.inventory, ROLLED_BACK, OLD_TARGET)
    before = _region_rrsets(lab, world, ROLLED_BACK)
    assert before and all(OLD_TARGET in v for (_, t), v in before.items() if t == "A")
    assert {r["step"] for r in _status(world).values()} == {"not started"}

    # The region's 2 owned rrsets are below octoDNS's minimum of 10 for the threshold; this
    # inventory asks for the rule at every size, so that it is seen refusing.
    edit_yaml(world.inventory / "group_vars" / "all" / "coder.yml",
              lambda d: d["coder_dns"].update(threshold_min_rrsets=0))
    refused = run_cli("migrate", "apply", "-i", str(world.inventory), "--auto-approve")
    assert refused.returncode != 0  # every owned rrset of the zone changes: DNS safety rule
    assert "need --force" in refused.stderr
    applied = run_cli("migrate", "apply", "-i", str(world.inventory), "--auto-approve",
                      "--force")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "dns check:" in applied.stderr  # the DnsCheck step ran and passed
    migrated = _region_rrsets(lab, world, ROLLED_BACK)
    assert migrated != before
    assert all(OLD_TARGET not in v for v in migrated.values())
    others = {r: _region_rrsets(lab, world, r) for r in REGIONS if r != ROLLED_BACK}
    status = _status(world)
    assert {r: s["step"] for r, s in status.items()} == dict.fromkeys(REGIONS, "RetainRelease")
    assert all(s["next"] == "nothing (migrated)" and s["by"] and s["at"]
               for s in status.values()), status

    # Killed after its DNS restore, the rollback is finished by a re-run.
    assert _killed_at(world, 5, "rollback", "--limit", ROLLED_BACK) == 5
    rolled = run_cli("migrate", "rollback", "-i", str(world.inventory), "--limit", ROLLED_BACK,
                     "--auto-approve", "--lock-wait", "60")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    # The killed run's helm uninstall may still have finished on its own.
    assert "Rollback applied" in rolled.stdout or "Nothing to roll back" in rolled.stdout
    token = world.emulator.token_file.read_text().strip()
    assert token not in rolled.stdout + rolled.stderr

    # The region: DNS answers as before, providers as before, satellite gone, old release on.
    assert _region_rrsets(lab, world, ROLLED_BACK) == before
    assert world.satellites() == sorted(r for r in REGIONS if r != ROLLED_BACK)
    assert {n: p["enable_net_v2"] for n, p in world.providers().items()} == {
        r: r != ROLLED_BACK for r in REGIONS}
    assert _satellite_release(helm, world, ROLLED_BACK) == "absent"
    # The other regions: untouched.
    for region in REGIONS:
        assert _release_status(helm, region, world.provider_namespace) == "deployed"
        if region != ROLLED_BACK:
            assert _satellite_release(helm, world, region) == "deployed"
            assert _region_rrsets(lab, world, region) == others[region]

    status = _status(world)
    assert status[ROLLED_BACK]["step"] == "rolled back"
    assert status[ROLLED_BACK]["next"].startswith("HelmRelease"), status[ROLLED_BACK]
    assert status["us-east"]["step"] == "RetainRelease"

    # The spelling, `rollback --migration`, is the same command.
    again = run_cli("rollback", "--migration", "v1.20-to-v1.21", "-i", str(world.inventory),
                    "--limit", ROLLED_BACK, "--auto-approve")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Nothing to roll back" in again.stdout
    assert _region_rrsets(lab, world, ROLLED_BACK) == before

    unknown = run_cli("migrate", "rollback", "-i", str(world.inventory), "--limit", "mars",
                      "--auto-approve")
    assert unknown.returncode != 0
    assert "--limit mars: expected one of the inventory's regions" in unknown.stderr


def _killed_at(world: MigrationWorld, nth_start: int, *args: str) -> int:
    """Run `migrate ARGS`, SIGKILL it when its *nth_start* change starts; return how many
    changes it had started (fewer when it finished first)."""
    process = subprocess.Popen(
        [*CLI, "migrate", *args, "-i", str(world.inventory), "--auto-approve",
         "--lock-wait", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert process.stderr is not None
    started = 0
    try:
        for line in process.stderr:
            if line.strip().startswith("started "):
                started += 1
                if started == nth_start:
                    os.kill(process.pid, signal.SIGKILL)
                    break
    finally:
        process.wait(timeout=600)
    return started


def _killed_after_first_change(world: MigrationWorld, *args: str) -> tuple[bool, int]:
    """Run `migrate apply ARGS --force` and SIGKILL it when a change starts after one of
    this run's changes finished: one step boundary further than the run before.

    Returns whether it was killed and how many changes the run finished. A run that is not
    killed must have succeeded.
    """
    process = subprocess.Popen(
        [*CLI, "migrate", "apply", *args, "-i", str(world.inventory), "--auto-approve",
         "--force", "--lock-wait", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert process.stderr is not None and process.stdout is not None
    finished, killed, seen = 0, False, []
    try:
        for line in process.stderr:
            seen.append(line)
            phase = line.strip().split(" ", 1)[0]
            if phase == "done":
                finished += 1
            elif phase == "started" and finished:
                os.kill(process.pid, signal.SIGKILL)
                killed = True
                break
        out = process.stdout.read()
    finally:
        process.wait(timeout=600)
    if not killed:
        assert process.returncode == 0, out + "".join(seen)
    return killed, finished


def _walk_boundaries(world: MigrationWorld, *args: str, most: int | None = None) -> int:
    """Kill `migrate apply ARGS` at each step boundary in turn until a run completes
    without reaching one (or after *most* kills); return the number of killed runs."""
    planned = run_cli("migrate", "plan", *args, "-i", str(world.inventory), "--output", "json")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    changes = sum(1 for w in json.loads(planned.stdout)["waves"] for c in w["changes"]
                  if c["action"] != "keep")
    kills = 0
    for _ in range(changes + 3):
        if kills == most:
            return kills
        killed, finished = _killed_after_first_change(world, *args)
        if not killed:
            return kills
        assert finished >= 1
        kills += 1
    pytest.fail(f"`migrate apply {' '.join(args)}` still had changes left after {kills} "
                f"killed runs for a plan of {changes} change(s): the re-runs do not converge")


def _journal(lab: LabHandle, world: MigrationWorld) -> list[JournalEntry]:
    primary = KubeCluster("lab-primary", str(lab.kubeconfig))
    return asyncio.run(Journal(primary, world.primary_namespace).history())


def test_sigkill_at_step_boundaries_then_rerun_reaches_the_same_end_state(
    lab: LabHandle, helm: Helm, world: MigrationWorld
) -> None:
    """SIGKILL at every step boundary of the canary region and at the first boundaries of
    the next wave; a re-run then completes with the end state of an uninterrupted migration.

    Each run is killed as soon as a change starts after one of its own changes finished, so
    run n dies at boundary n. The canary region (``--limit us-east``) is walked to the end:
    between every pair of its steps (namespace, helm install, registration, Networking v2,
    rebuild, each DNS rrset, DNS check, retained record). Then the whole migration is
    killed at the first three boundaries of the second wave, whose two regions run
    concurrently (the other region's change may be in flight at the kill). The rest finishes
    in one run. Walking every boundary of all three regions and the shared DNS wave
    (about 35 kills) passes too but takes about 4.5 minutes on the lab; the other regions'
    steps are the canary's.
    """
    assert _walk_boundaries(world, "--limit", "us-east") >= 8
    assert all(e.region == "us-east" for e in _journal(lab, world))
    assert _walk_boundaries(world, most=3) == 3
    finished = run_cli("migrate", "apply", "-i", str(world.inventory), "--auto-approve",
                       "--force", "--lock-wait", "60")
    assert finished.returncode == 0, finished.stdout + finished.stderr

    satellites = world.get("/api/private/satellites")["data"]
    assert sorted(s["name"] for s in satellites) == sorted(REGIONS)  # no duplicates
    assert {n: p["enable_net_v2"] for n, p in world.providers().items()} == dict.fromkeys(
        REGIONS, True)
    for region in REGIONS:
        assert _release_status(helm, region, world.provider_namespace) == "deployed"
        assert _satellite_release(helm, world, region) == "deployed"
        assert world.workspaces()[f"migration-check-{region}"]["latest_stat"][
            "container_status"] == "ON"
    primary = KubeCluster("lab-primary", str(lab.kubeconfig))
    found = asyncio.run(primary.read_config_map(world.primary_namespace, RETAINED_CONFIG_MAP))
    assert found is not None
    assert sorted(json.loads(found[0]["retained.json"])) == sorted(
        f"{r}/{world.provider_namespace}/{PROVIDER_RELEASE}" for r in REGIONS)
    # The completing run finished every change it started.
    history = _journal(lab, world)
    last_run = [e for e in history if e.run == history[-1].run]
    assert {e.change_id for e in last_run if e.phase == "started"} == {
        e.change_id for e in last_run if e.phase == "done"}
    assert {r["step"] for r in _status(world).values()} == {"RetainRelease"}

    replan = run_cli("migrate", "plan", "-i", str(world.inventory), "--detailed-exitcode")
    assert replan.returncode == 0, replan.stdout + replan.stderr
    check = run_cli("dns", "check", "-i", str(world.inventory), "--wait", "15")
    assert check.returncode == 0, check.stdout + check.stderr


def _tamper(inventory: Path, region: str, tag: str) -> tuple[RRSet, RRSet]:
    """Someone else edits one of *region*'s rrsets by hand (TTL + 1); returns (was, now)."""
    topology = load_topology(inventory)

    async def edit() -> tuple[RRSet, RRSet]:
        async with open_adapter(topology) as adapter:
            mine = sorted((r for r in await adapter.observe()
                           if f"{region}-{tag}" in r.name and r.type != "TXT"),
                          key=lambda r: r.key)
            assert mine, f"no rrset of {region} to edit"
            was = mine[0]
            now = RRSet(name=was.name, type=was.type, ttl=was.ttl + 1, records=was.records)
            await adapter.apply([RRSetChange(before=was, after=now)])
            return was, now

    return asyncio.run(edit())


def _switch_networking_v2_off(world: MigrationWorld, name: str) -> None:
    token = world.emulator.token_file.read_text().strip()

    async def switch() -> None:
        async with CoderV1Client(world.emulator.url, token) as coder:
            provider = next(p for p in await coder.list_providers() if p.name == name)
            await coder.set_networking_v2(provider.id, False)

    asyncio.run(switch())


def test_rollback_refuses_an_rrset_changed_after_the_migration_wrote_it(
    lab: LabHandle, helm: Helm, world: MigrationWorld
) -> None:
    _point_region_at(world.inventory, ROLLED_BACK, OLD_TARGET)
    before = _region_rrsets(lab, world, ROLLED_BACK)
    applied = run_cli("migrate", "apply", "-i", str(world.inventory), "--limit", ROLLED_BACK,
                      "--auto-approve", "--force")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert world.satellites() == [ROLLED_BACK]

    # After the migration: someone edits one of its rrsets, and someone switches the
    # region's provider back to Networking v1 by hand.
    wrote, edited = _tamper(world.inventory, ROLLED_BACK, world.tag)
    _switch_networking_v2_off(world, ROLLED_BACK)
    tampered = _region_rrsets(lab, world, ROLLED_BACK)

    refused = run_cli("migrate", "rollback", "-i", str(world.inventory), "--limit", ROLLED_BACK,
                      "--auto-approve")
    assert refused.returncode != 0, refused.stdout + refused.stderr
    said = " ".join(refused.stderr.split())
    records = " ".join(wrote.records)
    expected = (f"{wrote.name} {wrote.type} was changed after the migration wrote it: now ttl "
                f"{edited.ttl}: {records[:80]}")
    assert expected in said, said
    assert f"migration wrote ttl {wrote.ttl}: " in said
    assert "restore by hand or pass --force" in said
    # Nothing was changed.
    assert _region_rrsets(lab, world, ROLLED_BACK) == tampered
    assert world.satellites() == [ROLLED_BACK]
    assert _satellite_release(helm, world, ROLLED_BACK) == "deployed"

    forced = run_cli("migrate", "rollback", "-i", str(world.inventory), "--limit", ROLLED_BACK,
                     "--auto-approve", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "restored anyway: --force" in " ".join(forced.stderr.split())
    # The provider someone already switched back is left alone, not an error.
    assert "Networking v2 off" not in forced.stderr
    assert _region_rrsets(lab, world, ROLLED_BACK) == before  # the edited one restored too
    assert world.providers()[ROLLED_BACK]["enable_net_v2"] is False
    assert world.satellites() == []
    assert _satellite_release(helm, world, ROLLED_BACK) == "absent"
    assert _release_status(helm, ROLLED_BACK, world.provider_namespace) == "deployed"
    assert _status(world)[ROLLED_BACK]["step"] == "rolled back"
