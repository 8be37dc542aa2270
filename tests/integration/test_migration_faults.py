"""Faults and refused preflights of the v1.20 -> v1.21 migration on the lab.

The world is test_migration.py's (a v1.21 emulator as the primary, the old workspace-provider
release in each region, no satellites) on its own address block. The primary's 503s come
from the emulator's fault rules on ``GET /api/private/resource-pools/<id>``: the read-back
after switching Networking v2 on, which only the apply's executors send, so the faults land
in the middle of `migrate apply` (after the canary's satellite is installed and registered),
not in its preflight.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coder_migrate.engine.journal import Journal, JournalEntry
from coder_migrate.providers.coder import OPERATIONS_RETRY
from coder_migrate.providers.kube import KubeCluster
from tests.fixtures.coderd import EmulatorFactory, free_loopback_port
from tests.fixtures.dns import BindServer, ServerFailed
from tests.fixtures.lab import Helm, LabHandle
from tests.helpers import edit_yaml, lab_v1_values
from tests.integration.test_deploy_dns import tagged_rrsets
from tests.integration.test_migration import (
    REGIONS,
    MigrationWorld,
    _release_status,
    _tagged_namespaces,
    migration_world_at,
    run_cli,
)

pytestmark = pytest.mark.integration

ADDRESS_BLOCK = 18
READ_BACK = "/api/private/resource-pools/"
"""Prefix of ``GET /api/private/resource-pools/<id>`` (the list has no trailing slash)."""
RETRIES = OPERATIONS_RETRY.attempts - 1
"""Retries the clients' transport makes after the first try of an idempotent call."""
CANARY = "us-east"


@pytest.fixture
def world(
    lab: LabHandle, helm: Helm, coderd_factory: EmulatorFactory, tmp_path: Path
) -> Iterator[MigrationWorld]:
    with migration_world_at(lab, helm, coderd_factory, tmp_path, address_block=ADDRESS_BLOCK,
                            prefix="f", install_providers=True) as migration_world:
        yield migration_world


def _journal(lab: LabHandle, world: MigrationWorld) -> list[JournalEntry]:
    cluster = KubeCluster("lab-primary", str(lab.kubeconfig))
    return asyncio.run(Journal(cluster, world.primary_namespace).history())


def _untouched(lab: LabHandle, world: MigrationWorld) -> dict[str, Any]:
    """What a refused preflight must leave as it was."""
    return {
        "namespaces": _tagged_namespaces(lab, world.tag),
        "satellites": world.satellites(),
        "networking_v2": {n: p["enable_net_v2"] for n, p in world.providers().items()},
        "records": tagged_rrsets(lab, world.tag),
    }


def _assert_migrated(helm: Helm, world: MigrationWorld) -> None:
    assert world.satellites() == sorted(REGIONS)
    assert {n: p["enable_net_v2"] for n, p in world.providers().items()} == dict.fromkeys(
        REGIONS, True)
    assert all(_release_status(helm, r, world.provider_namespace) == "deployed" for r in REGIONS)
    again = run_cli("migrate", "plan", "-i", str(world.inventory), "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout


def test_503s_within_the_retry_budget_are_ridden_out(
    helm: Helm, world: MigrationWorld
) -> None:
    world.emulator.add_fault(kind="status", status=503, method="GET", path=READ_BACK,
                             count=RETRIES - 1)

    applied = run_cli("migrate", "apply", "-i", str(world.inventory), "--auto-approve")

    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert world.emulator.faults() == []  # every injected 503 was answered, and retried
    _assert_migrated(helm, world)


def test_503s_that_go_on_stop_clearly_and_a_rerun_completes(
    lab: LabHandle, helm: Helm, world: MigrationWorld
) -> None:
    canary_id = world.providers()[CANARY]["id"]
    world.emulator.add_fault(kind="status", status=503, method="GET", path=READ_BACK)

    stopped = run_cli("migrate", "apply", "-i", str(world.inventory), "--auto-approve")

    assert stopped.returncode == 7, stopped.stdout + stopped.stderr
    errors = " ".join(stopped.stderr.split())  # the console wraps long lines
    assert (f"wave 'canary {CANARY}' stopped: GET {READ_BACK}{canary_id} (503): the primary "
            f"at {world.emulator.url} answered 503 on all {RETRIES + 1} attempts") in errors
    assert "stopped. done: 3, not done:" in errors  # namespace, release, registration
    assert f"not done: {CANARY}/WorkspaceRebuild/migration-check-{CANARY}" in errors
    for region in REGIONS[1:]:
        assert f"not done: {region}/HelmRelease/" in errors
    token = world.emulator.token_file.read_text().strip()
    assert token not in stopped.stdout + stopped.stderr
    # The canary's switch reached the primary before the read-back failed: the journal says
    # so (started, then failed), so neither a re-run nor a rollback can miss it.
    latest = Journal.latest([e for e in _journal(lab, world) if e.region == CANARY])
    switch = latest[f"{CANARY}/ProviderNetworkingV2/{CANARY}"]
    assert switch.phase == "failed" and "503" in switch.detail
    assert all(e.phase in ("done", "failed") for e in latest.values())
    assert world.satellites() == [CANARY]
    assert [n for n, p in world.providers().items() if p["enable_net_v2"]] == [CANARY]
    namespaces = _tagged_namespaces(lab, world.tag)
    assert all(namespaces[r] == [world.provider_namespace] for r in REGIONS[1:])

    world.emulator.clear_faults()
    finished = run_cli("migrate", "apply", "-i", str(world.inventory), "--auto-approve")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    _assert_migrated(helm, world)


def test_a_primary_url_that_does_not_answer_and_a_wrong_powerdns_key_are_listed(
    lab: LabHandle, world: MigrationWorld, tmp_path: Path
) -> None:
    # eu-west's satellite would dial a port nothing listens on (a typo in coder_values).
    wrong_url = f"http://127.0.0.1:{free_loopback_port()}"
    edit_yaml(world.inventory / "host_vars" / "eu-west.yml", lambda d: d.update(
        coder_values=lab_v1_values({"coderd": {"satellite": {"primaryURL": wrong_url}}})))
    wrong_key = tmp_path / "pdns-api-key"
    wrong_key.write_text(secrets.token_hex(16))
    wrong_key.chmod(0o600)  # inventory validation refuses a secret file others can read
    edit_yaml(world.inventory / "group_vars" / "all" / "coder.yml", lambda d: d["coder_dns"][
        "powerdns"].update(api_key={"file": str(wrong_key)}))
    before = _untouched(lab, world)

    for command in ("plan", "apply"):
        extra = ("--auto-approve",) if command == "apply" else ()
        result = run_cli("migrate", command, "-i", str(world.inventory), *extra)
        assert result.returncode != 0, result.stdout
        errors = " ".join(result.stderr.split())
        assert "preflight found 2 problem(s); nothing was changed" in errors
        # Another origin than the primary's: probed without the session token.
        assert (f"eu-west: the satellite's primaryURL {wrong_url} does not answer from here: "
                f"could not reach {wrong_url} (ConnectError)") in errors
        assert ("dns: the powerdns zone lab.coder-migrate.test cannot be used with the "
                "inventory's coder_dns settings: PowerDNS API") in errors
        assert f"refused the API key from file {wrong_key} (401 on GET" in errors
        assert wrong_key.read_text() not in result.stdout + result.stderr
        # regions whose satellite reaches the primary are not named
        assert "us-east: the satellite's primaryURL" not in errors
    assert _untouched(lab, world) == before


def test_a_wrong_tsig_secret_is_listed_and_nothing_changes(
    lab: LabHandle, world: MigrationWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = "lab.coder-migrate.test"
    bind = BindServer(tmp_path / "bind", zone=zone)
    try:
        bind.start()
    except ServerFailed as error:
        pytest.fail(str(error))
    try:
        wrong = base64.b64encode(secrets.token_bytes(32)).decode()
        monkeypatch.setenv("FAULTS_TSIG_SECRET", wrong)
        edit_yaml(world.inventory / "group_vars" / "all" / "coder.yml", lambda d: d[
            "coder_dns"].update(provider="rfc2136", rfc2136={
                "server": bind.nameserver, "tsig_key_name": bind.key_name,
                "tsig_algorithm": bind.algorithm, "tsig_secret": {"env": "FAULTS_TSIG_SECRET"}}))
        zone_file = (bind.directory / f"{zone}.zone").read_text()
        before = _untouched(lab, world)

        result = run_cli("migrate", "apply", "-i", str(world.inventory), "--auto-approve")

        assert result.returncode != 0, result.stdout
        errors = " ".join(result.stderr.split())
        assert "preflight found 1 problem(s); nothing was changed" in errors
        assert (f"dns: the rfc2136 zone {zone} cannot be used with the inventory's coder_dns "
                f"settings: {bind.nameserver} refused TSIG key {bind.key_name}") in errors
        assert wrong not in result.stdout + result.stderr
        assert bind.secret not in result.stdout + result.stderr
        assert _untouched(lab, world) == before
        assert (bind.directory / f"{zone}.zone").read_text() == zone_file

        monkeypatch.setenv("FAULTS_TSIG_SECRET", bind.secret)  # the right key: no DNS problem
        right = run_cli("migrate", "plan", "-i", str(world.inventory))
        assert "dns: the rfc2136 zone" not in right.stderr, right.stderr
    finally:
        bind.stop()
