"""Verify the coder_provisioners role on the lab and the scenario's Coder v2 emulator.

The inventory is the scenario's (prepare.yml): a v2 primary (the emulator prepare started) and
two regions with external provisioners, in namespaces of this scenario. What users rely on:
one key in the primary's Secret and every region's, the provisioners started with that key
(their release's fingerprint annotation), connected to the primary with their region's tags,
and the toolkit seeing nothing left to do. Keys are compared by digest, never printed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
from pathlib import Path

import httpx
import yaml

REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).resolve().parent.parent
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
INVENTORY = EPHEMERAL / "inventory-lab"
ADMIN_TOKEN_FILE = EPHEMERAL / "coderd-v2" / "admin-token"
CLI = REPO / ".venv" / "bin" / "coder-migrate"
NAMESPACE = "molecule-provisioners"
RELEASE = "coder-provisioner"
PSK_SECRET = "coder-provisioner-psk"  # noqa: S105 - a Secret's name
ANNOTATION = "coder-migrate/provisioner-psk"
#: Region -> (kube context, replicas), as prepare.yml writes them.
REGIONS = {"molprov-east": ("lab-us-east", 2), "molprov-west": ("lab-eu-west", 1)}


def _in_repo(host, command: str):  # type: ignore[no-untyped-def]
    """Run *command* from the checkout (its ansible.cfg) with the lab's tools on PATH."""
    return host.run(
        f'cd {shlex.quote(str(REPO))} && eval "$({shlex.quote(str(CLI))} lab env)" && {command}'
    )


def _key_digest(host, context: str) -> str:  # type: ignore[no-untyped-def]
    """sha256 of the key in the Secret (the key itself never leaves this function)."""
    result = _in_repo(
        host, f"kubectl --context {context} -n {NAMESPACE} get secret {PSK_SECRET} -o json"
    )
    assert result.rc == 0, result.stderr
    key = base64.b64decode(json.loads(result.stdout)["data"]["psk"])
    assert len(key) >= 64  # 48 random bytes, URL-safe text
    return hashlib.sha256(key).hexdigest()


def test_the_primary_and_every_region_hold_the_same_key(host) -> None:  # type: ignore[no-untyped-def]
    primary = _key_digest(host, "lab-primary")
    for context, _replicas in REGIONS.values():
        assert _key_digest(host, context) == primary, context


def test_each_region_runs_its_provisioners_with_that_key(host) -> None:  # type: ignore[no-untyped-def]
    """The release's pods carry the fingerprint of the key they read (sha256: and 16 hex
    digits of its hash): the same key as the primary's."""
    fingerprint = "sha256:" + _key_digest(host, "lab-primary")[:16]
    for region, (context, replicas) in REGIONS.items():
        listed = _in_repo(host, f"helm list -n {NAMESPACE} --kube-context {context} -o json")
        assert listed.rc == 0, listed.stderr
        releases = {r["name"]: r for r in json.loads(listed.stdout)}
        assert releases[RELEASE]["status"] == "deployed"
        values = _in_repo(
            host, f"helm get values {RELEASE} -n {NAMESPACE} --kube-context {context} -o json")
        assert values.rc == 0, values.stderr
        chart = json.loads(values.stdout)
        assert chart["coder"]["podAnnotations"][ANNOTATION] == fingerprint
        assert chart["coder"]["replicaCount"] == replicas
        assert chart["provisionerDaemon"] == {"pskSecretName": PSK_SECRET,
                                              "tags": {"region": region}}


def test_the_primary_lists_every_regions_daemons() -> None:
    primary = yaml.safe_load((INVENTORY / "host_vars" / "primary.yml").read_text())
    token = ADMIN_TOKEN_FILE.read_text().strip()
    response = httpx.get(f"{primary['coder_access_url']}/api/v2/provisionerdaemons",
                         headers={"Coder-Session-Token": token}, timeout=10, trust_env=False)
    assert response.status_code == 200
    regions = [d["tags"].get("region") for d in response.json()]
    assert {r: regions.count(r) for r in REGIONS} == {
        r: replicas for r, (_context, replicas) in REGIONS.items()}


def test_status_shows_them_connected_and_nothing_is_left_to_do(host) -> None:  # type: ignore[no-untyped-def]
    result = _in_repo(host, f"{CLI} status -i {INVENTORY} --output json")
    rows = {row["site"]: row for row in json.loads(result.stdout)}
    for region, (_context, replicas) in REGIONS.items():
        assert rows[region]["provisioners"] == f"{replicas}/{replicas} connected", rows[region]
        assert rows[region]["provisioners_ok"] is True, rows[region]
    plan = _in_repo(host, f"{CLI} plan -i {INVENTORY} --no-dns --detailed-exitcode")
    assert plan.rc == 0, plan.stdout + plan.stderr
