"""Verify the coder_migration role on the lab: what playbooks/migrate.yml left behind.

The inventory is the scenario's copy of inventories/lab (prepare.yml): three v1 regions with
names, namespaces and addresses of their own, a private Coder emulator (v1.21) as the primary,
and the old workspace-provider release in each region's provider namespace.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).resolve().parent.parent
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
INVENTORY = EPHEMERAL / "inventory-lab"
TOKEN_FILE = EPHEMERAL / "coderd" / "admin-token"
CLI = REPO / ".venv" / "bin" / "coder-migrate"
PROVIDER_NAMESPACE = "molecule-migration-ws"
PROVIDER_RELEASE = "coder-workspace-provider"
SATELLITE_NAMESPACE = "molecule-migration"
REGIONS = {
    "molmig-east": ("lab-us-east", "http://127.0.53.1:17281"),
    "molmig-west": ("lab-eu-west", "http://127.0.53.2:17282"),
    "molmig-south": ("lab-ap-southeast", "http://127.0.53.3:17283"),
}


def _primary_url() -> str:
    primary = yaml.safe_load((INVENTORY / "host_vars" / "primary.yml").read_text())
    return str(primary["coder_access_url"])


def _get(path: str) -> Any:
    response = httpx.get(
        f"{_primary_url()}{path}",
        headers={"Session-Token": TOKEN_FILE.read_text().strip()},
        timeout=10,
        trust_env=False,
    )
    response.raise_for_status()
    return response.json()


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _plain(text: str) -> str:
    """*text* without colours (molecule forces Ansible's colours on)."""
    return ANSI.sub("", text)


def _in_repo(host, command: str):  # type: ignore[no-untyped-def]
    """Run *command* from the checkout (its ansible.cfg) with the lab's tools on PATH."""
    return host.run(
        f'cd {shlex.quote(str(REPO))} && eval "$({shlex.quote(str(CLI))} lab env)" && {command}'
    )


def test_networking_v2_is_on_for_every_regions_provider() -> None:
    providers = {p["name"]: p for p in _get("/api/private/resource-pools")["kubernetes"]}
    assert {name: providers[name]["enable_net_v2"] for name in REGIONS} == dict.fromkeys(
        REGIONS, True
    )


def test_each_region_has_its_satellite_registered_and_answering() -> None:
    registered = {s["name"]: s["fingerprint"] for s in _get("/api/private/satellites")["data"]}
    assert sorted(registered) == sorted(REGIONS)
    for name, (_context, url) in REGIONS.items():
        served = httpx.get(f"{url}/api/private/satellites/key", timeout=10, trust_env=False)
        assert served.status_code == 200
        assert registered[name] == served.json()["fingerprint"]


def test_the_test_workspaces_were_rebuilt_and_are_on() -> None:
    workspaces = {w["name"]: w for w in _get("/api/v0/workspaces")}
    for name in REGIONS:
        workspace = workspaces[f"migration-check-{name}"]
        assert workspace["latest_stat"]["container_status"] == "ON"
        assert workspace["last_built_at"]


def test_the_probe_users_stayed_online_and_moved_to_the_satellites() -> None:
    """converge runs the playbook with ``coder_migration_probe`` (then idempotence, again):
    the migration's users went from the envproxies to the satellites without a failed
    request; the second run's stayed on the satellites."""
    reports = sorted((EPHEMERAL / "probe-reports").glob("*.json"))
    assert len(reports) == 2, reports
    migration, again = (json.loads(path.read_text()) for path in reports)
    for report, routes in ((migration, ["envproxy", "satellite"]), (again, ["satellite"])):
        assert report["failed"] == 0, report["lines"]
        assert sorted(r["region"] for r in report["regions"]) == sorted(REGIONS)
        assert all(r["requests"] > 0 and r["routes"] == routes for r in report["regions"]), (
            report["lines"])
    token = TOKEN_FILE.read_text().strip()
    assert all(token not in path.read_text() for path in reports)


def test_the_old_workspace_provider_releases_are_still_deployed(host) -> None:  # type: ignore[no-untyped-def]
    for context, _url in REGIONS.values():
        result = _in_repo(
            host, f"helm list -n {PROVIDER_NAMESPACE} --kube-context {context} -a -o json"
        )
        assert result.rc == 0, result.stderr
        releases = {r["name"]: r for r in json.loads(result.stdout)}
        assert releases[PROVIDER_RELEASE]["status"] == "deployed"
        satellite = _in_repo(
            host, f"helm list -n {SATELLITE_NAMESPACE} --kube-context {context} -o json"
        )
        assert [r["status"] for r in json.loads(satellite.stdout)] == ["deployed"]


def test_the_cli_plans_no_migration_change(host) -> None:  # type: ignore[no-untyped-def]
    result = _in_repo(host, f"{CLI} migrate plan -i {INVENTORY} --detailed-exitcode")
    assert result.rc == 0, result.stdout + result.stderr


def test_check_mode_with_limit_reports_no_change(host) -> None:  # type: ignore[no-untyped-def]
    result = _in_repo(
        host,
        f"ANSIBLE_NOCOLOR=1 ansible-playbook -i {INVENTORY} playbooks/migrate.yml --check "
        "--diff --limit molmig-west",
    )
    output = _plain(result.stdout)
    assert result.rc == 0, output + result.stderr
    recap = output.split("PLAY RECAP")[-1]
    assert "molmig-west                : ok=" in recap
    assert "changed=0" in recap
    assert "primary " not in recap  # --limit kept the shared names' play out


def test_the_role_refuses_a_v2_inventory_with_a_clear_message(host) -> None:  # type: ignore[no-untyped-def]
    result = _in_repo(
        host,
        f"ANSIBLE_NOCOLOR=1 ansible-playbook -i {INVENTORY} playbooks/migrate.yml "
        "--limit molmig-east --skip-tags validate -e coder_generation=v2",
    )
    assert result.rc != 0
    output = " ".join(_plain(result.stdout + result.stderr).split())
    assert "coder_migration: molmig-east must be in group coder_regions (or be the primary) " \
           "with coder_generation v1, found v2" in output
