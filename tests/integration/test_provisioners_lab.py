"""External provisioners on a private v2 lab, as a user runs them: ``apply`` with provisioners in
three regions (it returns once the primary lists them connected), ``status`` per region, a
wrong key in one region, ``rotate provisioner-psk`` killed (SIGKILL) mid-way and run again,
provisioners removed (one region drops ``coder_provisioners``, another leaves the inventory),
apply stopping at a region's gate while the primary refuses its daemons (an external store
with a wrong key);
and no key in anything the toolkit wrote or printed.

The lab is real: its kube-apiservers hold the Secrets and releases, helm installs the
``coder-provisioner`` stand-in, the lab plays each provisioner pod with
``coder_migrate.lab.provisionerd`` (a websocket to the emulator's serve endpoint with the key
from the pod's Secret), and the emulator checks the key the primary's pod reads.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from kubernetes import client as kube_client

from coder_migrate import sensitive
from coder_migrate.lab.paths import CacheLayout, StateLayout
from coder_migrate.lab.runtime import Lab
from coder_migrate.lab.settings import LabSettings
from tests.fixtures.lab import kube_api
from tests.helpers import REPO, PrivateLab, edit_yaml, relocated_inventory

pytestmark = pytest.mark.integration

#: Clear of every other test's lab (0, 1000-1200, 2500, 3000, 3300-3500).
PORT_OFFSET = 3600
#: Proxies on 127.0.36.N: no other test uses that block.
ADDRESS_BLOCK = 36
REGIONS = ("us-east", "eu-west", "ap-southeast")
REPLICAS = {"us-east": 2, "eu-west": 1, "ap-southeast": 1}
WRONG = "eu-west"
PSK_SECRET = "coder-provisioner-psk"
NEXT_SECRET = "coder-provisioner-psk-next"
TIMEOUT = 600


class User:
    """Runs ``coder-migrate`` against the private lab; keeps every output for the scan."""

    def __init__(self, lab: PrivateLab, inventory: Path) -> None:
        self.lab = lab
        self.inventory = inventory
        self.outputs: list[str] = []
        self.env = {**os.environ, **lab.environment(), "COLUMNS": "200"}
        self.program = str(Path(sys.executable).parent / "coder-migrate")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.program, *args], env=self.env, capture_output=True,
                                text=True, timeout=TIMEOUT, check=False)
        self.outputs += [result.stdout, result.stderr]
        if check:
            assert result.returncode == 0, (
                f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def status(self) -> dict[str, dict[str, Any]]:
        result = self.run("status", "-i", str(self.inventory), "--output", "json", check=False)
        return {row["site"]: row for row in json.loads(result.stdout)}

    @property
    def settings(self) -> LabSettings:
        return LabSettings.create(port_offset=self.lab.port_offset, coder_mode="v2")

    @property
    def kubeconfig(self) -> Path:
        return self.lab.state_dir / "kubeconfig"

    def secret(self, context: str, namespace: str, name: str) -> str | None:
        with kube_api(self.kubeconfig, context) as api:
            try:
                found = kube_client.CoreV1Api(api).read_namespaced_secret(name, namespace)
            except kube_client.ApiException as error:
                if error.status == 404:
                    return None
                raise
        value = base64.b64decode((found.data or {})["psk"]).decode()
        return sensitive.register(value)

    def write_secret(self, context: str, namespace: str, name: str, value: str) -> None:
        body = kube_client.V1Secret(metadata=kube_client.V1ObjectMeta(name=name),
                                    string_data={"psk": value})
        with kube_api(self.kubeconfig, context) as api:
            kube_client.CoreV1Api(api).replace_namespaced_secret(name, namespace, body)

    def create_secret(self, context: str, namespace: str, name: str, value: str) -> None:
        """A Secret the site's own store maintains (coder-migrate never writes it)."""
        body = kube_client.V1Secret(metadata=kube_client.V1ObjectMeta(name=name),
                                    string_data={"psk": value})
        with kube_api(self.kubeconfig, context) as api:
            kube_client.CoreV1Api(api).create_namespaced_secret(namespace, body)

    def primary_psk(self) -> str:
        value = self.secret("lab-primary", "coder", PSK_SECRET)
        assert value is not None
        return value


@pytest.fixture
def user(tmp_path: Path) -> Iterator[User]:
    lab = PrivateLab(tmp_path / "lab", PORT_OFFSET, ADDRESS_BLOCK)
    inventory = relocated_inventory(REPO / "inventories" / "lab-v2",
                                    tmp_path / "inventories" / "lab-v2", lab)
    for region in REGIONS:
        edit_yaml(inventory / "host_vars" / f"{region}.yml", lambda data, r=region: data.update(
            coder_provisioners={"replicas": REPLICAS[r], "tags": {"region": r}}))
    try:
        yield User(lab, inventory)
    finally:
        Lab(StateLayout(lab.state_dir), CacheLayout.default()).down()


def healthy(row: dict[str, Any]) -> bool:
    return bool(row["registration"] == "ok" and row["reachable"]
                and row["release_status"] == "deployed" and row["provisioners_ok"])


def wait_status(user: User, ok: dict[str, bool], timeout: float = 90) -> dict[str, dict[str, Any]]:
    """Poll ``status`` until each region's provisioners are healthy or not as in *ok*."""
    deadline = time.monotonic() + timeout
    rows: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        rows = user.status()
        if all(rows[r]["provisioners_ok"] == want and (
                not want or rows[r]["provisioners"] == f"{REPLICAS[r]}/{REPLICAS[r]} connected")
               for r, want in ok.items()):
            return rows
        time.sleep(2)
    pytest.fail(f"status not as expected within {timeout:.0f} s: {json.dumps(rows, indent=1)}")


def serve(user: User, psk: str) -> tuple[int, str]:
    """Dial the primary's serve endpoint as a daemon presenting *psk*: (101, "connected"), or
    the refusal's status and message."""
    url = (f"http://127.0.0.1:{user.settings.coderd_port}/api/v2/organizations/default/"
           "provisionerdaemons/serve?provisioner=terraform&name=probe&tag=region=probe")

    async def dial() -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url, headers={"Coder-Provisioner-PSK": psk}):
                    return 101, "connected"
            except aiohttp.WSServerHandshakeError:
                pass
            async with session.get(url, headers={"Coder-Provisioner-PSK": psk}) as response:
                return response.status, str((await response.json())["message"])

    return asyncio.run(dial())


def daemons(user: User) -> list[dict[str, Any]]:
    token = (user.lab.state_dir / "secrets" / "coder-token").read_text().strip()
    response = httpx.get(
        f"http://127.0.0.1:{user.settings.coderd_port}/api/v2/provisionerdaemons",
        headers={"Coder-Session-Token": token}, timeout=10)
    response.raise_for_status()
    listed: list[dict[str, Any]] = response.json()
    return listed


def connected_now(user: User, regions: tuple[str, ...] = REGIONS) -> None:
    """``status`` right after an apply, without waiting: apply returned only once the primary
    listed every region's daemons connected."""
    rows = user.status()
    shown = {r: (rows[r]["provisioners"], rows[r]["provisioners_ok"]) for r in regions}
    assert shown == {r: (f"{REPLICAS[r]}/{REPLICAS[r]} connected", True) for r in regions}, rows


def check_connected(user: User) -> str:
    """Every region's daemons connected with the deployment's key; the key."""
    rows = wait_status(user, dict.fromkeys(REGIONS, True))
    assert all(healthy(rows[r]) for r in REGIONS), rows
    key = user.primary_psk()
    assert len(key) >= 64  # 48 random bytes
    for region in REGIONS:
        assert user.secret(f"lab-{region}", "coder-proxy", PSK_SECRET) == key
    # (The probe daemon serve() dialled is no region's.)
    listed = sorted((d["name"], d["tags"]) for d in daemons(user)
                    if d["tags"]["region"] in REGIONS)
    assert listed == sorted(
        (f"coder-provisioner-{r}-lab-{i}", {"region": r, "scope": "organization", "owner": ""})
        for r in REGIONS for i in range(REPLICAS[r]))
    return key


def check_wrong_key(user: User, key: str) -> None:
    """A wrong key in one region: status says so for that region only; apply repairs it."""
    user.write_secret(f"lab-{WRONG}", "coder-proxy", PSK_SECRET,
                      sensitive.register("wrong-" + key[::-1]))
    rows = wait_status(user, {r: r != WRONG for r in REGIONS})
    assert "is not the primary's" in rows[WRONG]["detail"], rows[WRONG]
    assert all(healthy(rows[r]) for r in REGIONS if r != WRONG)
    pod_log = user.lab.state_dir / "logs" / "pods" / f"{WRONG}-coder-proxy-coder-provisioner.log"
    deadline = time.monotonic() + 30
    while "refused: 401" not in pod_log.read_text() and time.monotonic() < deadline:
        time.sleep(1)
    assert "refused: 401" in pod_log.read_text()
    plan = user.run("plan", "-i", str(user.inventory))
    assert f"Secret {PSK_SECRET} in ns coder-proxy of lab-{WRONG}" in plan.stdout
    # The release already names the right key (no helm upgrade): the copy restarts the pods,
    # which read the key only at start, and apply waits for them.
    assert "restart its provisioners, which read the key at start" in plan.stdout
    applied = user.run("apply", "-i", str(user.inventory), "--auto-approve")
    assert "restarted coder-provisioner" in applied.stdout + applied.stderr
    wait_status(user, dict.fromkeys(REGIONS, True))


def kill_rotation(user: User, after: str = f"Secret {PSK_SECRET} in ns coder of") -> str:
    """Start the rotation, SIGKILL it once the step *after* names is done (by default the
    primary taking the new key); the staged key."""
    rotate = subprocess.Popen(
        [user.program, "rotate", "provisioner-psk", "-i", str(user.inventory),
         "--auto-approve"],
        env=user.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert rotate.stderr is not None and rotate.stdout is not None
    seen: list[str] = []
    for line in rotate.stderr:
        seen.append(line)
        if "done" in line and after in line:
            rotate.send_signal(signal.SIGKILL)
            break
    rotate.wait(timeout=60)
    user.outputs += ["".join(seen), rotate.stderr.read(), rotate.stdout.read()]
    assert rotate.returncode == -signal.SIGKILL, "".join(seen)
    staged = user.secret("lab-primary", "coder", NEXT_SECRET)
    assert staged is not None
    return staged


def play(user: User, tmp: Path) -> int:
    """The coder_provisioners role (without rotate) for the primary, as a playbook runs it;
    the number of tasks it changed."""
    playbook = tmp / "provisioners.yml"
    playbook.write_text("- hosts: coder_primary\n  gather_facts: false\n"
                        "  roles: [coder_provisioners]\n")
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", str(user.inventory), str(playbook)],
        env={**user.env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1",
             "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
             "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections")},
        capture_output=True, text=True, timeout=TIMEOUT, check=False)
    user.outputs += [result.stdout, result.stderr]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    recap = result.stdout.rsplit("PLAY RECAP", 1)[1]
    return int(recap.split("changed=", 1)[1].split()[0])


VAULT = "from-vault"


def check_gate_and_external_store(user: User) -> str:
    """eu-west moves its key to an external store whose Secret holds a wrong key: apply rolls
    its provisioners, the primary refuses them, and apply stops at the region's gate naming the
    region, its tags and how many daemons of its replicas were seen; the copy coder-migrate
    wrote is planned for deletion. With the deployment's key in the store, apply finishes with
    the daemons connected, and the copy is gone. The wrong key (for the scan)."""
    inventory = str(user.inventory)
    key = user.primary_psk()
    wrong = sensitive.register("vault-" + key[::-1])
    user.create_secret(f"lab-{WRONG}", "coder-proxy", VAULT, wrong)
    edit_yaml(user.inventory / "host_vars" / f"{WRONG}.yml", lambda d: d.update(
        coder_secret_store={"kind": "external", "secret": VAULT}))
    plan = " ".join(user.run("plan", "-i", inventory).stdout.split())
    assert (f"- delete Secret {PSK_SECRET} in ns coder-proxy of lab-{WRONG} # coder_secret_store "
            f"names an external store's Secret ({VAULT}): the key coder-migrate copied there is "
            "deleted (needs --force)") in plan, plan
    failed = user.run("apply", "-i", inventory, "--auto-approve", "--force", "--gate-timeout",
                      "15", check=False)
    said = " ".join((failed.stdout + failed.stderr).split())
    assert failed.returncode != 0, said
    assert (f"{WRONG}: health gate not met within 15 s: the primary lists 0 of "
            f"{REPLICAS[WRONG]} provisioner daemons (replicas) with tags region={WRONG} "
            "connected since ") in said, said
    copy_kept = user.secret(f"lab-{WRONG}", "coder-proxy", PSK_SECRET) == key
    assert copy_kept  # the removals wave was not reached
    user.write_secret(f"lab-{WRONG}", "coder-proxy", VAULT, key)
    user.run("apply", "-i", inventory, "--auto-approve", "--force")
    connected_now(user)
    copy_gone = user.secret(f"lab-{WRONG}", "coder-proxy", PSK_SECRET) is None
    assert copy_gone
    assert user.run("plan", "-i", inventory, "--detailed-exitcode",
                    check=False).returncode == 0
    return wrong


def helm_releases(user: User, context: str) -> set[str]:
    """The helm releases of ns coder-proxy (helm keeps each in Secrets labelled owner=helm)."""
    with kube_api(user.kubeconfig, context) as api:
        found = kube_client.CoreV1Api(api).list_namespaced_secret(
            "coder-proxy", label_selector="owner=helm").items
    return {str((s.metadata.labels or {})["name"]) for s in found if s.metadata}


def check_removals(user: User) -> None:
    """ap-southeast drops coder_provisioners, eu-west (its key in an external store) leaves the
    inventory: the plan names the releases and the key Secret coder-migrate wrote that go,
    apply --force removes exactly those (the external store's Secret stays), and the next plan
    is empty; us-east keeps its provisioners."""
    inventory = user.inventory
    key = user.primary_psk()
    edit_yaml(inventory / "host_vars" / "ap-southeast.yml", lambda d: d.pop("coder_provisioners"))
    edit_yaml(inventory / "hosts.yml",
              lambda d: d["all"]["children"]["coder_regions"]["hosts"].pop(WRONG))
    plan = " ".join(user.run("plan", "-i", str(inventory)).stdout.split())
    for region, why in [(WRONG, "the region is no longer in the inventory"),
                        ("ap-southeast", "coder_provisioners is no longer set for the region")]:
        where = f"in ns coder-proxy of lab-{region} # {why}"
        assert re.search(
            rf"- delete helm release coder-provisioner \(coder-provisioner-[0-9.]+\) {where}: "
            r"its provisioner daemons are uninstalled \(needs --force\)", plan), plan
    assert (f"- delete Secret {PSK_SECRET} in ns coder-proxy of lab-ap-southeast # "
            "coder_provisioners is no longer set for the region: the key coder-migrate copied "
            "there is deleted after its provisioners (needs --force)") in plan, plan
    assert f"Secret {VAULT}" not in plan and "of lab-us-east" not in plan, plan
    refused = user.run("apply", "-i", str(inventory), "--auto-approve", check=False)
    assert refused.returncode != 0 and "--force" in refused.stdout + refused.stderr
    assert helm_releases(user, "lab-ap-southeast") == {"coder-proxy", "coder-provisioner"}
    user.run("apply", "-i", str(inventory), "--auto-approve", "--force")
    assert helm_releases(user, "lab-ap-southeast") == {"coder-proxy"}
    assert helm_releases(user, f"lab-{WRONG}") == set()
    copy_gone = user.secret("lab-ap-southeast", "coder-proxy", PSK_SECRET) is None
    vault_kept = user.secret(f"lab-{WRONG}", "coder-proxy", VAULT) == key
    assert copy_gone and vault_kept  # an external store's Secret is never coder-migrate's
    assert helm_releases(user, "lab-us-east") == {"coder-proxy", "coder-provisioner"}
    us_east_kept = user.secret("lab-us-east", "coder-proxy", PSK_SECRET) == key
    assert us_east_kept
    connected_now(user, ("us-east",))
    assert user.run("plan", "-i", str(inventory), "--detailed-exitcode",
                    check=False).returncode == 0


def check_no_key_anywhere(user: User, keys: dict[str, str]) -> None:
    """No key in anything the toolkit printed, journalled or logged (fingerprints only)."""
    with kube_api(user.kubeconfig, "lab-primary") as api:
        config_maps = kube_client.CoreV1Api(api).list_namespaced_config_map("coder").items
    journal = json.dumps([c.data for c in config_maps])
    assert "sha256:" in journal  # what the journal keeps instead
    logs = [p.read_text(errors="replace") for p in (user.lab.state_dir / "logs").rglob("*.log")]
    assert logs
    for where, text in [*(("output", o) for o in user.outputs), ("journal", journal),
                        *(("lab log", t) for t in logs)]:
        for name, key in keys.items():
            assert key not in text, f"the {name} key appears in a {where}"


def test_provisioners_connect_a_wrong_key_shows_a_killed_rotation_resumes_and_removal(
    user: User, tmp_path: Path,
) -> None:
    inventory = str(user.inventory)
    user.run("lab", "up", "--coder", "v2")
    user.run("apply", "-i", inventory, "--auto-approve")
    connected_now(user)
    first = check_connected(user)
    assert user.run("plan", "-i", inventory, "--detailed-exitcode", check=False).returncode == 0

    check_wrong_key(user, first)

    staged = kill_rotation(user)
    assert staged == user.primary_psk() != first
    user.run("rotate", "provisioner-psk", "-i", inventory, "--auto-approve", "--lock-wait", "60")
    connected_now(user)
    new = check_connected(user)
    assert new == staged
    assert user.secret("lab-primary", "coder", NEXT_SECRET) is None
    assert serve(user, first) == (401, "provisioner daemon auth token invalid")
    assert serve(user, new) == (101, "connected")
    assert user.run("plan", "-i", inventory, "--detailed-exitcode", check=False).returncode == 0

    # The Ansible role: nothing to do; a rotation killed after staging is finished; repeatable.
    assert play(user, tmp_path) == 0
    third = kill_rotation(user, after=f"Secret {NEXT_SECRET} in ns coder of")
    assert play(user, tmp_path) == 1
    assert check_connected(user) == third != new
    assert user.secret("lab-primary", "coder", NEXT_SECRET) is None
    assert play(user, tmp_path) == 0

    vault = check_gate_and_external_store(user)
    check_removals(user)
    check_no_key_anywhere(user, {"first": first, "new": new, "third": third,
                                 "wrong": "wrong-" + first[::-1], "vault": vault})
