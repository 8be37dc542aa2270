"""Verify the coder_workspace_proxy role on the lab and the scenario's Coder v2 emulator.

The inventory is the scenario's copy of inventories/lab (prepare.yml) as Coder v2: three
regions whose proxies run in namespaces of this scenario; the primary is the v2 emulator
prepare started.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
from pathlib import Path

import httpx
import yaml

REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).resolve().parent.parent
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
INVENTORY = EPHEMERAL / "inventory-lab"
ADMIN_TOKEN_FILE = EPHEMERAL / "coderd-v2" / "admin-token"
CLI = REPO / ".venv" / "bin" / "coder-migrate"
NAMESPACE = RELEASE = "molecule-wsproxy"
TOKEN_SECRET = "coder-workspace-proxy-token"  # noqa: S105 - a Secret's name
REGIONS = {
    "molv2-east": ("lab-us-east", "http://127.0.52.1:17201"),
    "molv2-west": ("lab-eu-west", "http://127.0.52.2:17202"),
    "molv2-south": ("lab-ap-southeast", "http://127.0.52.3:17203"),
}


def _primary_url() -> str:
    primary = yaml.safe_load((INVENTORY / "host_vars" / "primary.yml").read_text())
    return str(primary["coder_access_url"])


def _in_repo(host, command: str):  # type: ignore[no-untyped-def]
    """Run *command* from the checkout (its ansible.cfg) with the lab's tools on PATH."""
    return host.run(
        f'cd {shlex.quote(str(REPO))} && eval "$({shlex.quote(str(CLI))} lab env)" && {command}'
    )


def _proxy_token(host, context: str) -> str:  # type: ignore[no-untyped-def]
    result = _in_repo(
        host,
        f"kubectl --context {context} -n {NAMESPACE} get secret {TOKEN_SECRET} -o json",
    )
    assert result.rc == 0, result.stderr
    return base64.b64decode(json.loads(result.stdout)["data"]["token"]).decode()


def test_the_cli_sees_the_roles_result_as_no_change(host) -> None:  # type: ignore[no-untyped-def]
    limits = " ".join(f"--limit {name}" for name in REGIONS)
    result = _in_repo(
        host, f"{CLI} plan -i {INVENTORY} {limits} --no-dns --detailed-exitcode --output json"
    )
    assert result.rc == 0, result.stdout + result.stderr


def test_status_reports_every_workspace_proxy_ok(host) -> None:  # type: ignore[no-untyped-def]
    result = _in_repo(host, f"{CLI} status -i {INVENTORY} --output json")
    rows = {row["site"]: row for row in json.loads(result.stdout)}
    for name, (_context, url) in REGIONS.items():
        row = rows[name]
        assert row["release_status"] == "deployed", row
        assert row["registration"] == "ok", row
        assert row["pods"] == "1/1", row
        assert row["reachable"] is True, row
        assert row["access_url"] == url


def test_the_primary_has_exactly_one_healthy_proxy_per_region() -> None:
    token = ADMIN_TOKEN_FILE.read_text().strip()
    listed = httpx.get(
        f"{_primary_url()}/api/v2/workspaceproxies",
        headers={"Coder-Session-Token": token},
        timeout=10,
        trust_env=False,
    )
    assert listed.status_code == 200
    proxies = [p for p in listed.json()["regions"] if p["name"] in REGIONS]
    assert sorted(p["name"] for p in proxies) == sorted(REGIONS)
    for proxy in proxies:
        assert proxy["status"]["status"] == "ok", proxy
        assert proxy["path_app_url"] == REGIONS[proxy["name"]][1]


def test_helm_lists_each_proxy_release_reading_its_token_from_a_secret(host) -> None:  # type: ignore[no-untyped-def]
    for context, url in REGIONS.values():
        result = _in_repo(host, f"helm list -n {NAMESPACE} --kube-context {context} -o json")
        assert result.rc == 0, result.stderr
        releases = {release["name"]: release for release in json.loads(result.stdout)}
        assert releases[RELEASE]["status"] == "deployed"
        assert releases[RELEASE]["chart"] == "coder-2.15.0"
        values = _in_repo(
            host, f"helm get values {RELEASE} -n {NAMESPACE} --kube-context {context} -o json"
        )
        coder = json.loads(values.stdout)["coder"]
        assert coder["workspaceProxy"] is True
        env = {item["name"]: item for item in coder["env"]}
        assert env["CODER_ACCESS_URL"]["value"] == url
        assert env["CODER_PRIMARY_ACCESS_URL"]["value"] == _primary_url()
        assert env["CODER_PROXY_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": TOKEN_SECRET,
            "key": "token",
        }
        assert _proxy_token(host, context) not in values.stdout


def test_check_mode_shows_a_values_change_without_the_token_and_applies_nothing(
    host,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    changed = tmp_path / "inventory"
    shutil.copytree(INVENTORY, changed)
    region_file = changed / "host_vars" / "molv2-west.yml"
    region = yaml.safe_load(region_file.read_text())
    region["coder_values"]["coder"]["resources"] = {"requests": {"cpu": "250m"}}
    region_file.write_text(yaml.safe_dump(region))
    result = _in_repo(
        host,
        f"ansible-playbook -i {changed} playbooks/regions.yml --check --diff -v --limit molv2-west",
    )
    assert result.rc == 0, result.stdout + result.stderr
    assert "changed=1" in result.stdout
    assert f"update helm release {RELEASE}" in result.stdout
    assert "cpu: 250m" in result.stdout
    assert _proxy_token(host, "lab-eu-west") not in result.stdout + result.stderr
    unchanged = _in_repo(
        host, f"{CLI} plan -i {INVENTORY} --limit molv2-west --no-dns --detailed-exitcode"
    )
    assert unchanged.rc == 0, unchanged.stdout + unchanged.stderr


def test_the_role_refuses_a_v1_region_with_a_clear_message(host) -> None:  # type: ignore[no-untyped-def]
    result = _in_repo(
        host,
        f"ansible -i {INVENTORY} molv2-west -m ansible.builtin.include_role "
        "-a name=coder_workspace_proxy -e coder_generation=v1",
    )
    assert result.rc != 0
    assert (
        "coder_workspace_proxy: molv2-west must be in group coder_regions with coder_generation "
        "v2, found v1 (v1 regions use the coder_satellite role)"
    ) in result.stdout + result.stderr
