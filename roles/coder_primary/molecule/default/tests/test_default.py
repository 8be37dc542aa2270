"""Verify the coder_primary role on the lab: what the primary play left behind.

The inventory is the scenario's copy of inventories/lab (prepare.yml) whose primary release
lives in a namespace of its own in the lab's primary cluster.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import yaml

REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).resolve().parent.parent
INVENTORY = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory-lab"
CLI = REPO / ".venv" / "bin" / "coder-migrate"
NAMESPACE = RELEASE = "molecule-primary"


def _in_repo(host, command: str):  # type: ignore[no-untyped-def]
    """Run *command* from the checkout (its ansible.cfg) with the lab's tools on PATH."""
    return host.run(
        f'cd {shlex.quote(str(REPO))} && eval "$({shlex.quote(str(CLI))} lab env)" && {command}'
    )


def test_the_cli_sees_the_roles_result_as_no_change(host) -> None:  # type: ignore[no-untyped-def]
    result = _in_repo(
        host, f"{CLI} plan -i {INVENTORY} --limit primary --no-dns --detailed-exitcode"
    )
    assert result.rc == 0, result.stdout + result.stderr


def test_status_reports_the_primary_release_deployed(host) -> None:  # type: ignore[no-untyped-def]
    result = _in_repo(host, f"{CLI} status -i {INVENTORY} --limit primary --output json")
    rows = {row["site"]: row for row in json.loads(result.stdout)}
    primary = rows["primary"]
    assert primary["release_status"] == "deployed", primary
    assert primary["chart"] == "coder-1.21.0", primary
    ready, total = primary["pods"].split("/")
    assert int(total) > 0 and ready == total, primary
    assert primary["reachable"] is True, primary


def test_helm_lists_the_coder_release_deployed_without_satellite_mode(host) -> None:  # type: ignore[no-untyped-def]
    result = _in_repo(host, f"helm list -n {NAMESPACE} --kube-context lab-primary -o json")
    assert result.rc == 0, result.stderr
    releases = {release["name"]: release for release in json.loads(result.stdout)}
    assert releases[RELEASE]["status"] == "deployed"
    assert releases[RELEASE]["chart"] == "coder-1.21.0"
    values = json.loads(
        _in_repo(
            host, f"helm get values {RELEASE} -n {NAMESPACE} --kube-context lab-primary -o json"
        ).stdout
    )
    assert "satellite" not in values.get("coderd", {})


def test_check_mode_shows_a_values_change_and_applies_nothing(host, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    changed = tmp_path / "inventory"
    shutil.copytree(INVENTORY, changed)
    primary_file = changed / "host_vars" / "primary.yml"
    primary = yaml.safe_load(primary_file.read_text())
    primary["coder_values"]["coderd"]["replicas"] = 2
    primary_file.write_text(yaml.safe_dump(primary))
    result = _in_repo(host, f"ansible-playbook -i {changed} playbooks/primary.yml --check --diff")
    assert result.rc == 0, result.stdout + result.stderr
    assert "changed=1" in result.stdout
    assert f"update helm release {RELEASE}" in result.stdout
    assert "replicas: 2" in result.stdout
    unchanged = _in_repo(
        host, f"{CLI} plan -i {INVENTORY} --limit primary --no-dns --detailed-exitcode"
    )
    assert unchanged.rc == 0, unchanged.stdout + unchanged.stderr


def test_the_role_refuses_a_host_that_is_not_the_primary(host) -> None:  # type: ignore[no-untyped-def]
    result = _in_repo(
        host,
        f"ansible -i {INVENTORY} molpri-east -m ansible.builtin.include_role -a name=coder_primary",
    )
    assert result.rc != 0
    assert (
        "coder_primary: molpri-east must be in group coder_primary with coder_generation v1 or "
        "v2, found v1"
    ) in result.stdout + result.stderr
