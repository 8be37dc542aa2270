"""plan / apply / status on the lab: v1 satellites and v2 workspace proxies, three regions.

Each test deploys a copy of inventories/lab with its own namespaces, releases, loopback
addresses and a private Coder emulator as its primary, so tests never share registrations.
The satellites and proxies are the bundled proxy server, run by the lab for each release.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as kube_client

from coder_migrate.engine.lock import apply_lock
from coder_migrate.inventory import load_topology
from coder_migrate.providers.coder import satellite_key
from coder_migrate.providers.kube import KubeCluster
from tests.fixtures.coderd import CoderEmulator, EmulatorFactory
from tests.fixtures.lab import LabHandle
from tests.helpers import REPO, edit_yaml, lab_inventory, lab_v1_values

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "coder_migrate"]
REGIONS = ("us-east", "eu-west", "ap-southeast")
V2_EMULATOR = {"health_interval_seconds": 1, "regions": list(REGIONS)}
_TAGS = itertools.count()
# Each test's satellites get loopback addresses no earlier test used: the lab stops an earlier
# test's proxies only when its namespaces are gone, which takes a moment.
_V1_BLOCKS = itertools.count(60)
_V2_BLOCKS = itertools.count(80)


def unique_tag(prefix: str) -> str:
    """Names no earlier test used (their namespaces may still be terminating)."""
    return f"{prefix}{os.getpid() % 1000}x{next(_TAGS)}"


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**os.environ, "COLUMNS": "200"}, check=False,
    )


def plan_json(inventory: Path, *extra: str) -> dict[str, Any]:
    result = run_cli("plan", "-i", str(inventory), "--no-dns", "--output", "json", *extra)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def effective(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for w in plan["waves"] for c in w["changes"] if c["action"] != "keep"]


def world_snapshot(lab: LabHandle, tag: str) -> dict[str, Any]:
    """Namespaces with the tag and the Secrets in them, per cluster (to prove nothing changed)."""
    snapshot: dict[str, Any] = {}
    for name, context in lab.contexts.items():
        with lab.api(context) as api:
            core = kube_client.CoreV1Api(api)
            namespaces = sorted(
                n.metadata.name for n in core.list_namespace().items if tag in n.metadata.name
            )
            snapshot[name] = {
                ns: sorted(s.metadata.name for s in core.list_namespaced_secret(ns).items)
                for ns in namespaces
            }
    return snapshot


def delete_tagged_namespaces(lab: LabHandle, tag: str) -> None:
    for context in lab.contexts.values():
        with lab.api(context) as api:
            core = kube_client.CoreV1Api(api)
            for namespace in core.list_namespace().items:
                if tag in namespace.metadata.name:
                    core.delete_namespace(namespace.metadata.name)


def access_url(inventory: Path, region: str) -> str:
    return load_topology(inventory).region(region).access_url


def port_open(url: str) -> bool:
    try:
        httpx.get(url.rstrip("/") + "/healthz", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def wait_for(predicate: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return bool(predicate())


@pytest.fixture
def v1_world(lab: LabHandle, coderd_factory: EmulatorFactory, tmp_path: Path) -> Iterator[
    tuple[Path, CoderEmulator]
]:
    emulator = coderd_factory("v1.21")
    tag = unique_tag("d1")
    inventory = lab_inventory(
        tmp_path, tag=tag, address_block=next(_V1_BLOCKS), primary_url=emulator.url,
        token_file=emulator.token_file,
    )
    yield inventory, emulator
    delete_tagged_namespaces(lab, tag)


@pytest.fixture
def v2_world(lab: LabHandle, coderd_factory: EmulatorFactory, tmp_path: Path) -> Iterator[
    tuple[Path, CoderEmulator]
]:
    emulator = coderd_factory("v2", config=V2_EMULATOR)
    tag = unique_tag("d2")
    inventory = lab_inventory(
        tmp_path, tag=tag, address_block=next(_V2_BLOCKS), generation="v2",
        primary_url=emulator.url,
        token_file=emulator.token_file,
    )
    yield inventory, emulator
    delete_tagged_namespaces(lab, tag)


def registered_satellites(emulator: CoderEmulator) -> list[str]:
    token = emulator.token_file.read_text().strip()
    response = httpx.get(f"{emulator.url}/api/private/satellites",
                         headers={"Session-Token": token}, timeout=10)
    response.raise_for_status()
    return sorted(s["name"] for s in response.json()["data"])


def live_proxies(emulator: CoderEmulator) -> list[dict[str, Any]]:
    token = emulator.token_file.read_text().strip()
    response = httpx.get(f"{emulator.url}/api/v2/workspaceproxies",
                         headers={"Coder-Session-Token": token}, timeout=10)
    response.raise_for_status()
    return [p for p in response.json()["regions"] if p["name"] != "primary"]


def remove_region(inventory: Path, region: str) -> None:
    def drop(data: dict[str, Any]) -> None:
        del data["all"]["children"]["coder_regions"]["hosts"][region]

    edit_yaml(inventory / "hosts.yml", drop)
    (inventory / "host_vars" / f"{region}.yml").unlink()


def test_v1_plan_apply_status_replan_and_remove(
    lab: LabHandle, v1_world: tuple[Path, CoderEmulator]
) -> None:
    inventory, emulator = v1_world
    plan = run_cli("plan", "-i", str(inventory), "--no-dns", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stderr
    assert "wave canary us-east" in plan.stdout and "wave regions" in plan.stdout
    assert "satellite:" in plan.stdout and "enable: true" in plan.stdout  # values diff shown

    applied = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    assert registered_satellites(emulator) == sorted(REGIONS)

    status = run_cli("status", "-i", str(inventory), "--output", "json")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = {r["site"]: r for r in json.loads(status.stdout)}
    assert all(rows[r]["registration"] == "ok" and rows[r]["reachable"] for r in REGIONS)
    assert rows["us-east"]["chart"] == "coder-1.21.0"

    again = run_cli("plan", "-i", str(inventory), "--no-dns", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout

    # A region removed from the inventory: deregistered then uninstalled, only with --force.
    southeast_url = access_url(inventory, "ap-southeast")
    remove_region(inventory, "ap-southeast")
    refused = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve")
    assert refused.returncode == 6
    assert "need --force" in refused.stderr and "ap-southeast" in refused.stderr
    assert registered_satellites(emulator) == sorted(REGIONS)

    removed = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve", "--force")
    assert removed.returncode == 0, removed.stderr
    assert registered_satellites(emulator) == ["eu-west", "us-east"]
    assert wait_for(lambda: not port_open(southeast_url))
    final = run_cli("plan", "-i", str(inventory), "--no-dns", "--detailed-exitcode")
    assert final.returncode == 0, final.stdout + final.stderr


def test_v2_proxies_tokens_in_secrets_and_lost_token_regenerated(
    lab: LabHandle, v2_world: tuple[Path, CoderEmulator]
) -> None:
    inventory, emulator = v2_world
    applied = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    proxies = {p["name"]: p for p in live_proxies(emulator)}
    assert sorted(proxies) == sorted(REGIONS)
    assert all(p["status"]["status"] == "ok" for p in proxies.values())
    # The lab inventory names no coder_region_icon: each proxy gets its region's flag.
    assert {name: (p["display_name"], p["icon_url"]) for name, p in proxies.items()} == {
        "us-east": ("US East", "/emojis/1f1fa-1f1f8.png"),
        "eu-west": ("EU West", "/emojis/1f1ee-1f1ea.png"),
        "ap-southeast": ("AP Southeast", "/emojis/1f1f8-1f1ec.png"),
    }

    status = run_cli("status", "-i", str(inventory), "--output", "json")
    assert status.returncode == 0, status.stdout + status.stderr
    token_file = emulator.token_file.read_text().strip()
    assert token_file not in applied.stdout + applied.stderr + status.stdout

    # The token lives only in the region's Secret; the values reference it.
    namespace = f"coder-sat-{inventory.name.removeprefix('lab-')}"
    cluster = KubeCluster("lab-eu-west", str(lab.kubeconfig))
    assert asyncio.run(cluster.secret_keys(namespace, "coder-workspace-proxy-token")) == {"token"}

    # Lose the token: the plan regenerates it into the Secret; no second proxy.
    with lab.api("lab-eu-west") as api:
        kube_client.CoreV1Api(api).delete_namespaced_secret(
            "coder-workspace-proxy-token", namespace
        )
    plan = plan_json(inventory)
    kinds = [(c["region"], c["kind"], c["action"]) for c in effective(plan)]
    assert kinds == [("eu-west", "ProxyToken", "act")]
    again = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve")
    assert again.returncode == 0, again.stderr
    assert sorted(p["name"] for p in live_proxies(emulator)) == sorted(REGIONS)
    # Its pods were rolled so they read the new token.
    with lab.api("lab-eu-west") as api:
        deployment = kube_client.AppsV1Api(api).read_namespaced_deployment("coder", namespace)
    assert "kubectl.kubernetes.io/restartedAt" in (deployment.spec.template.metadata.annotations
                                                  or {})
    assert plan_json(inventory, "--detailed-exitcode")["waves"] == []

    # Removal: uninstall, delete the proxy, delete its token Secret.
    remove_region(inventory, "ap-southeast")
    removed = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve", "--force")
    assert removed.returncode == 0, removed.stderr
    assert sorted(p["name"] for p in live_proxies(emulator)) == ["eu-west", "us-east"]
    southeast = KubeCluster("lab-ap-southeast", str(lab.kubeconfig))
    assert asyncio.run(southeast.secret_keys(namespace, "coder-workspace-proxy-token")) is None


def test_v2_display_name_and_icon_updates_pass_the_strict_validation(
    lab: LabHandle, v2_world: tuple[Path, CoderEmulator]
) -> None:
    """A proxy created without an icon (real Coder stores none) and a changed display name:
    the PATCHes carry every field real Coder requires, so they succeed."""
    inventory, emulator = v2_world
    token = emulator.token_file.read_text().strip()
    bare = httpx.post(f"{emulator.url}/api/v2/workspaceproxies", json={"name": "us-east"},
                      headers={"Coder-Session-Token": token}, timeout=10)
    assert bare.status_code == 201 and bare.json()["proxy"]["icon_url"] == ""
    applied = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    proxies = {p["name"]: p for p in live_proxies(emulator)}
    assert (proxies["us-east"]["display_name"], proxies["us-east"]["icon_url"]) == (
        "US East", "/emojis/1f1fa-1f1f8.png")

    edit_yaml(inventory / "host_vars" / "eu-west.yml", lambda d: d.update(
        coder_region_display_name="Dublin", coder_region_icon="/emojis/1f3f0.png"))
    plan = plan_json(inventory)
    assert [(c["region"], c["kind"], c["action"]) for c in effective(plan)] == [
        ("eu-west", "WorkspaceProxy", "update")]
    updated = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve")
    assert updated.returncode == 0, updated.stderr
    eu_west = {p["name"]: p for p in live_proxies(emulator)}["eu-west"]
    assert (eu_west["display_name"], eu_west["icon_url"]) == ("Dublin", "/emojis/1f3f0.png")
    assert plan_json(inventory, "--detailed-exitcode")["waves"] == []


def test_stale_and_edited_plan_files_are_refused(
    lab: LabHandle, v1_world: tuple[Path, CoderEmulator], tmp_path: Path
) -> None:
    inventory, _ = v1_world
    saved = tmp_path / "plan.json"
    made = run_cli("plan", "-i", str(inventory), "--no-dns", "--out", str(saved),
                   "--limit", "primary")
    assert made.returncode == 0, made.stderr
    before = world_snapshot(lab, inventory.name.removeprefix("lab-"))

    edited = json.loads(saved.read_text())
    edited["waves"][0]["changes"][0]["reason"] = "edited"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(edited))
    result = run_cli("apply", "-i", str(inventory), str(tampered), "--auto-approve")
    assert result.returncode == 6 and "checksum does not match" in result.stderr

    edit_yaml(inventory / "host_vars" / "primary.yml",
              lambda d: d.update(coder_values=lab_v1_values({"coderd": {"replicas": 2}})))
    result = run_cli("apply", "-i", str(inventory), str(saved), "--auto-approve")
    assert result.returncode == 6, result.stderr
    assert "is stale" in result.stderr
    assert world_snapshot(lab, inventory.name.removeprefix("lab-")) == before


def test_concurrent_apply_is_refused_by_the_lock(
    lab: LabHandle, v1_world: tuple[Path, CoderEmulator]
) -> None:
    inventory, _ = v1_world
    tag = inventory.name.removeprefix("lab-")
    primary = KubeCluster("lab-primary", str(lab.kubeconfig))

    async def hold_and_apply() -> subprocess.CompletedProcess[str]:
        async with apply_lock(primary, f"coder-{tag}", "deploy", identity="operator-b@host"):
            return await asyncio.to_thread(
                run_cli, "apply", "-i", str(inventory), "--no-dns", "--auto-approve"
            )

    result = asyncio.run(hold_and_apply())
    assert result.returncode == 6, result.stderr
    assert "holds the lock" in result.stderr and "operator-b@host" in result.stderr
    # Nothing but the lock's namespace was touched: no region namespace exists.
    assert world_snapshot(lab, tag)["us-east"] == {}


def test_apply_killed_mid_way_converges_on_rerun(
    lab: LabHandle, v2_world: tuple[Path, CoderEmulator]
) -> None:
    inventory, emulator = v2_world
    tag = inventory.name.removeprefix("lab-")
    namespace = f"coder-sat-{tag}"
    for kill_at in ("create workspace proxy us-east", "create helm release"):
        process = subprocess.Popen(
            [*CLI, "apply", "-i", str(inventory), "--no-dns", "--auto-approve"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "started" in line and kill_at in line:
                break
        else:
            pytest.fail(f"apply ended before '{kill_at}' started:\n{''.join(seen)[-2000:]}")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        # The killed holder's lease expires on its own; the re-run waits for it.
        rerun = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve",
                        "--lock-wait", "60")
        assert rerun.returncode == 0, rerun.stderr
        names = sorted(p["name"] for p in live_proxies(emulator))
        assert names == sorted(REGIONS)  # no duplicate proxy
        assert plan_json(inventory, "--detailed-exitcode")["waves"] == []
        for context in ("lab-us-east", "lab-eu-west", "lab-ap-southeast"):
            cluster = KubeCluster(context, str(lab.kubeconfig))
            keys = asyncio.run(cluster.secret_keys(namespace, "coder-workspace-proxy-token"))
            assert keys == {"token"}
        delete_tagged_namespaces(lab, tag)
        for proxy in live_proxies(emulator):
            emulator_delete_proxy(emulator, proxy["id"])
        # Every cluster's namespaces gone, the primary's too: an apply into a namespace that
        # is still terminating cannot even take its lock there.
        assert wait_for(lambda: not any(world_snapshot(lab, tag).values()), timeout=120), (
            f"namespaces still terminating: {world_snapshot(lab, tag)}")


def emulator_delete_proxy(emulator: CoderEmulator, proxy_id: str) -> None:
    token = emulator.token_file.read_text().strip()
    httpx.delete(f"{emulator.url}/api/v2/workspaceproxies/{proxy_id}",
                 headers={"Coder-Session-Token": token}, timeout=10).raise_for_status()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown-context", "kube context 'lab-nowhere' cannot be used"),
        ("missing-tls", "TLS secret coder-eu-west-tls does not exist"),
        ("wrong-token", "401"),
    ],
)
def test_bad_input_is_one_clear_line_and_changes_nothing(
    lab: LabHandle, v1_world: tuple[Path, CoderEmulator], tmp_path: Path, case: str,
    expected: str,
) -> None:
    inventory, _ = v1_world
    tag = inventory.name.removeprefix("lab-")
    if case == "unknown-context":
        edit_yaml(inventory / "host_vars" / "eu-west.yml",
                  lambda d: d.update(coder_kube_context="lab-nowhere"))
    elif case == "missing-tls":
        edit_yaml(inventory / "host_vars" / "eu-west.yml",
                  lambda d: d.update(coder_tls={"host_secret": "coder-eu-west-tls"}))
        with lab.api("lab-eu-west") as api:
            kube_client.CoreV1Api(api).create_namespace(
                kube_client.V1Namespace(metadata=kube_client.V1ObjectMeta(name=f"coder-sat-{tag}"))
            )
    else:
        wrong = tmp_path / "wrong-token"
        wrong.write_text("0123456789-abcdefghij0123456789abcdef\n")
        wrong.chmod(0o600)  # inventory validation refuses a secret file others can read
        edit_yaml(inventory / "group_vars" / "all" / "coder.yml",
                  lambda d: d.update(coder_session_token={"file": str(wrong)}))
    before = world_snapshot(lab, tag)
    result = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve")
    assert result.returncode in (5, 6), result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "0123456789-abcdefghij" not in result.stderr + result.stdout
    assert world_snapshot(lab, tag) == before


def test_unreachable_primary_after_deploy_is_a_clear_error(
    lab: LabHandle, v1_world: tuple[Path, CoderEmulator]
) -> None:
    inventory, emulator = v1_world
    applied = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve",
                      "--limit", "primary")
    assert applied.returncode == 0, applied.stderr
    emulator.stop()
    before = world_snapshot(lab, inventory.name.removeprefix("lab-"))
    result = run_cli("plan", "-i", str(inventory), "--no-dns")
    assert result.returncode == 5
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "GET /api" in lines[0], result.stderr
    assert world_snapshot(lab, inventory.name.removeprefix("lab-")) == before


def test_failed_canary_gate_stops_the_apply_before_other_regions(
    lab: LabHandle, v1_world: tuple[Path, CoderEmulator]
) -> None:
    inventory, emulator = v1_world
    tag = inventory.name.removeprefix("lab-")
    # The canary's release runs no satellite (satellite mode off: `coderd run`, which the lab
    # does not play), so nothing serves its key. (coderd.replicas 0 would not do: coder/coder
    # 1.21.0 renders a 0 as no replicas at all, and Kubernetes runs one.)
    edit_yaml(inventory / "host_vars" / "us-east.yml", lambda d: d.update(
        coder_values=lab_v1_values({"coderd": {"satellite": {"enable": ""}}})))
    result = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve",
                     "--gate-timeout", "4")
    assert result.returncode == 7, result.stderr
    assert "wave 'canary us-east' stopped" in result.stderr
    assert "not done: eu-west/HelmRelease" in result.stderr
    snapshot = world_snapshot(lab, tag)
    assert snapshot["eu-west"] == {} and snapshot["ap-southeast"] == {}
    assert registered_satellites(emulator) == []


def test_status_reports_a_stopped_satellite_unreachable(
    lab: LabHandle, v1_world: tuple[Path, CoderEmulator]
) -> None:
    inventory, _ = v1_world
    tag = inventory.name.removeprefix("lab-")
    applied = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    with lab.api("lab-eu-west") as api:
        kube_client.AppsV1Api(api).patch_namespaced_deployment_scale(
            "coderd", f"coder-sat-{tag}", {"spec": {"replicas": 0}}
        )
    assert wait_for(lambda: not port_open(access_url(inventory, "eu-west")))
    status = run_cli("status", "-i", str(inventory), "--output", "json")
    assert status.returncode == 1 and status.stdout, status.stderr
    rows = {r["site"]: r for r in json.loads(status.stdout)}
    assert rows["eu-west"]["registration"] == "unreachable"
    assert not rows["eu-west"]["reachable"]
    assert rows["us-east"]["registration"] == "ok"


def test_a_satellite_key_from_another_process_at_the_access_url_is_not_registered(
    lab: LabHandle, v1_world: tuple[Path, CoderEmulator], tmp_path: Path
) -> None:
    """Another process answering at a region's access URL (an old pod, a satellite being
    removed from the same address) serves a key that is not the release's: registering it
    would break every signed request, so apply waits for the release's key, then stops."""
    inventory, emulator = v1_world
    url = httpx.URL(access_url(inventory, "us-east"))
    impostor_key = tmp_path / "impostor.key"
    impostor = subprocess.Popen(
        [sys.executable, "-m", "coder_migrate.proxy"],
        env={
            **os.environ,
            "CODER_PRIMARY_ACCESS_URL": emulator.url,
            "CODER_PROXY_MODE": "satellite",
            "CODER_PROXY_SATELLITE_KEY_FILE": str(impostor_key),
            "CODER_HTTP_ADDRESS": f"{url.host}:{url.port}",
        },
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: port_open(str(url)))
        stopped = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve",
                          "--gate-timeout", "6")
        assert stopped.returncode == 7, stopped.stdout + stopped.stderr
        errors = " ".join(stopped.stderr.split())
        assert "another process answers at this access URL; not registered" in errors
        assert "us-east" not in registered_satellites(emulator)
    finally:
        impostor.terminate()
        impostor.wait(timeout=30)

    # The impostor gone, the lab's pod for the release binds the address (after its backoff).
    applied = run_cli("apply", "-i", str(inventory), "--no-dns", "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    token = emulator.token_file.read_text().strip()
    satellites = httpx.get(f"{emulator.url}/api/private/satellites",
                           headers={"Session-Token": token}, timeout=10).json()["data"]
    registered = next(s for s in satellites if s["name"] == "us-east")
    with lab.api("lab-us-east") as api:
        secret = kube_client.CoreV1Api(api).read_namespaced_secret(
            "coder-replica-private-key", load_topology(inventory).region("us-east").namespace)
    pem = base64.b64decode(secret.data["privateKey"]).decode()
    assert registered["fingerprint"] == satellite_key.fingerprint(
        satellite_key.public_key_pem(pem))
