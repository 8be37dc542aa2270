"""Verify the coder_satellite role on the lab: what the regions play left behind.

The inventory is the scenario's copy of inventories/lab (prepare.yml): three v1 regions with
names, namespaces and addresses of their own, the lab's Coder emulator as the primary.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import httpx
import yaml

REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).resolve().parent.parent
INVENTORY = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory-lab"
CLI = REPO / ".venv" / "bin" / "coder-migrate"
PRIMARY = "http://127.0.0.1:17080"
NAMESPACE = RELEASE = "molecule-satellite"
REGIONS = {
    "molsat-east": ("lab-us-east", "http://127.0.51.1:17181"),
    "molsat-west": ("lab-eu-west", "http://127.0.51.2:17182"),
    "molsat-south": ("lab-ap-southeast", "http://127.0.51.3:17183"),
}


def _in_repo(host, command: str):  # type: ignore[no-untyped-def]
    """Run *command* from the checkout (its ansible.cfg) with the lab's tools on PATH."""
    return host.run(
        f'cd {shlex.quote(str(REPO))} && eval "$({shlex.quote(str(CLI))} lab env)" && {command}'
    )


def test_the_cli_sees_the_roles_result_as_no_change(host) -> None:  # type: ignore[no-untyped-def]
    limits = " ".join(f"--limit {name}" for name in REGIONS)
    result = _in_repo(
        host, f"{CLI} plan -i {INVENTORY} {limits} --no-dns --detailed-exitcode --output json"
    )
    assert result.rc == 0, result.stdout + result.stderr


def test_status_reports_every_satellite_ok(host) -> None:  # type: ignore[no-untyped-def]
    result = _in_repo(host, f"{CLI} status -i {INVENTORY} --output json")
    rows = {row["site"]: row for row in json.loads(result.stdout)}
    for name, (_context, url) in REGIONS.items():
        row = rows[name]
        assert row["release_status"] == "deployed", row
        assert row["registration"] == "ok", row
        assert row["pods"] == "1/1", row
        assert row["reachable"] is True, row
        assert row["access_url"] == url


def test_helm_lists_each_satellite_release_deployed(host) -> None:  # type: ignore[no-untyped-def]
    for context, url in REGIONS.values():
        result = _in_repo(host, f"helm list -n {NAMESPACE} --kube-context {context} -o json")
        assert result.rc == 0, result.stderr
        releases = {release["name"]: release for release in json.loads(result.stdout)}
        assert releases[RELEASE]["status"] == "deployed"
        assert releases[RELEASE]["chart"] == "coder-1.21.0"
        values = _in_repo(
            host, f"helm get values {RELEASE} -n {NAMESPACE} --kube-context {context} -o json"
        )
        satellite = json.loads(values.stdout)["coderd"]["satellite"]
        assert satellite == {"enable": True, "accessURL": url, "primaryURL": PRIMARY}


def test_each_region_is_registered_with_the_key_its_satellite_serves() -> None:
    token = (REPO / ".lab" / "secrets" / "coder-token").read_text().strip()
    listed = httpx.get(
        f"{PRIMARY}/api/private/satellites",
        headers={"Session-Token": token},
        timeout=10,
        trust_env=False,
    )
    assert listed.status_code == 200
    registered = {s["name"]: s["fingerprint"] for s in listed.json()["data"]}
    for name, (_context, url) in REGIONS.items():
        served = httpx.get(f"{url}/api/private/satellites/key", timeout=10, trust_env=False)
        assert served.status_code == 200
        assert registered[name] == served.json()["fingerprint"]


def test_check_mode_shows_a_values_change_and_applies_nothing(host, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    changed = tmp_path / "inventory"
    shutil.copytree(INVENTORY, changed)
    region_file = changed / "host_vars" / "molsat-west.yml"
    region = yaml.safe_load(region_file.read_text())
    region["coder_values"]["coderd"]["resources"] = {"requests": {"cpu": "250m"}}
    region_file.write_text(yaml.safe_dump(region))
    result = _in_repo(
        host,
        f"ansible-playbook -i {changed} playbooks/regions.yml --check --diff --limit molsat-west",
    )
    assert result.rc == 0, result.stdout + result.stderr
    assert "molsat-west                : ok=" in result.stdout
    assert "changed=1" in result.stdout
    assert "update helm release molecule-satellite" in result.stdout
    assert "cpu: 250m" in result.stdout
    # Nothing was applied: the scenario's own inventory still plans no change.
    unchanged = _in_repo(
        host, f"{CLI} plan -i {INVENTORY} --limit molsat-west --no-dns --detailed-exitcode"
    )
    assert unchanged.rc == 0, unchanged.stdout + unchanged.stderr


def test_the_role_refuses_a_v2_region_with_a_clear_message(host) -> None:  # type: ignore[no-untyped-def]
    result = _in_repo(
        host,
        f"ansible -i {INVENTORY} molsat-west -m ansible.builtin.include_role "
        "-a name=coder_satellite -e coder_generation=v2",
    )
    assert result.rc != 0
    assert (
        "coder_satellite: molsat-west must be in group coder_regions with coder_generation v1, "
        "found v2 (v2 regions use the coder_workspace_proxy role)"
    ) in result.stdout + result.stderr


def test_an_unknown_kube_context_fails_with_one_clear_line(host, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "inventory"
    shutil.copytree(INVENTORY, broken)
    region_file = broken / "host_vars" / "molsat-west.yml"
    region = yaml.safe_load(region_file.read_text())
    region["coder_kube_context"] = "lab-nowhere"
    region_file.write_text(yaml.safe_dump(region))
    result = _in_repo(
        host,
        f"ANSIBLE_NOCOLOR=1 ansible-playbook -i {broken} playbooks/regions.yml --limit molsat-west",
    )
    assert result.rc != 0
    output = result.stdout + result.stderr
    failures = [line for line in output.splitlines() if "fatal: [molsat-west]" in line]
    assert len(failures) == 1, output
    assert "kube context 'lab-nowhere' cannot be used" in failures[0]
    assert "Traceback" not in output
    # Nothing changed: the scenario's own inventory still plans no change for the region.
    unchanged = _in_repo(
        host, f"{CLI} plan -i {INVENTORY} --limit molsat-west --no-dns --detailed-exitcode"
    )
    assert unchanged.rc == 0, unchanged.stdout + unchanged.stderr
