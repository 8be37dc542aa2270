"""``lab up`` / ``lab down`` on private lab instances (own state directory, ports moved with
``--port-offset``), so the session's shared lab keeps running for the other tests.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from kubernetes import client as kube_client

from coder_migrate.errors import ClusterNotReady
from coder_migrate.lab.build import COMPONENTS
from coder_migrate.lab.paths import CacheLayout, StateLayout
from coder_migrate.lab.process import listening_ports_of, port_is_free
from coder_migrate.lab.runtime import Lab
from coder_migrate.lab.settings import LabSettings
from tests.fixtures.lab import kube_api

pytestmark = pytest.mark.integration

CLI = [str(Path(sys.executable).parent / "coder-migrate")]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "lab", *args], capture_output=True, text=True, timeout=300, check=False
    )


def _processes_mentioning(path: Path) -> list[str]:
    """Every live process whose command line names PATH (what a lab there would start)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path) in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def _namespaces(kubeconfig: Path, context: str) -> set[str]:
    with kube_api(kubeconfig, context) as api:
        items = kube_client.CoreV1Api(api).list_namespace().items
    return {str(ns.metadata.name) for ns in items if ns.metadata}


def test_up_reuse_keep_and_down_leave_no_process_and_no_port(tmp_path: Path) -> None:
    state = tmp_path / "lab"
    settings = LabSettings.create(regions=1, port_offset=1000, coder_mode="v2")
    options = ["--state-dir", str(state), "--port-offset", "1000", "--regions", "1"]
    options += ["--coder", "v2"]
    try:
        started = _cli("up", *options)
        assert started.returncode == 0, started.stderr
        lab = Lab(StateLayout(state), CacheLayout.default())
        pids = lab.pids()
        assert len(pids) == 4 + 2 * 5  # pdns, named, coderd, pods; 5 processes per cluster
        listening = listening_ports_of(pids)
        assert set(settings.fixed_ports().values()) <= listening
        assert all(port < 65536 for port in listening)
        kubeconfig = state / "kubeconfig"
        # The emulator plays the primary asked for (a v2 deployment here).
        token = (state / "secrets" / "coder-token").read_text().strip()
        me = httpx.get(
            f"http://127.0.0.1:{settings.coderd_port}/api/v2/users/me",
            headers={"Coder-Session-Token": token},
            timeout=10,
        )
        assert me.status_code == 200, me.text
        with kube_api(kubeconfig, "lab-us-east") as api:
            body = kube_client.V1Namespace(metadata=kube_client.V1ObjectMeta(name="kept-data"))
            kube_client.CoreV1Api(api).create_namespace(body)

        # A second `lab up` reuses the running lab.
        again = _cli("up", *options)
        assert again.returncode == 0, again.stderr
        assert "reused the running lab" in again.stdout
        assert lab.pids() == pids
        status = json.loads(_cli("status", "--output", "json", "--state-dir", str(state)).stdout)
        assert status["running"] is True

        # --keep: every process stops and every port is free, the data stays.
        kept = _cli("down", "--keep", "--state-dir", str(state))
        assert kept.returncode == 0, kept.stderr
        assert _processes_mentioning(state) == []
        assert [p for p in settings.fixed_ports().values() if not port_is_free(p)] == []
        restarted = _cli("up", *options)
        assert restarted.returncode == 0, restarted.stderr
        assert "kept-data" in _namespaces(kubeconfig, "lab-us-east")

        stopped = _cli("down", "--state-dir", str(state))
        assert stopped.returncode == 0, stopped.stderr
        assert _processes_mentioning(state) == []
        assert [p for p in settings.fixed_ports().values() if not port_is_free(p)] == []
        assert not (state / "kwok").exists()
        assert not (state / "secrets").exists()
    finally:
        _cli("down", "--state-dir", str(state))


def test_busy_port_is_one_clear_line_and_starts_nothing(tmp_path: Path) -> None:
    state = tmp_path / "lab"
    settings = LabSettings.create(regions=1, port_offset=1100)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", settings.powerdns_api_port))
        squatter.listen()
        result = _cli("up", "--state-dir", str(state), "--port-offset", "1100", "--regions", "1")
    assert result.returncode == 4
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{settings.powerdns_api_port} (PowerDNS API)" in lines[0]
    assert "--port-offset" in lines[0]
    assert _processes_mentioning(state) == []


def _cache_with_failing_kwokctl(root: Path) -> CacheLayout:
    """The real cache, except a kwokctl that fails the way a broken cluster start would."""
    real = CacheLayout.default()
    fake = CacheLayout(root)
    fake.lab.mkdir(parents=True)
    for component in COMPONENTS:
        source = real.component_dir(component.key)
        target = fake.component_dir(component.key)
        if component.name != "kwok":
            target.symlink_to(source, target_is_directory=True)
            continue
        target.mkdir()
        (target / "kwok").symlink_to(source / "kwok")
        (target / ".built.json").write_text((source / ".built.json").read_text())
        kwokctl = target / "kwokctl"
        kwokctl.write_text("#!/bin/sh\necho 'simulated control plane failure' >&2\nexit 3\n")
        kwokctl.chmod(0o755)
    return fake


def test_failed_up_stops_everything_it_started(tmp_path: Path) -> None:
    state = StateLayout(tmp_path / "lab")
    settings = LabSettings.create(regions=1, port_offset=1200)
    lab = Lab(state, _cache_with_failing_kwokctl(tmp_path / "cache"))
    started = time.monotonic()
    with pytest.raises(ClusterNotReady) as failure:
        lab.up(settings)
    message = str(failure.value)
    assert "simulated control plane failure" in message
    assert "lab down" in message and "\n" not in message
    assert time.monotonic() - started < 60
    # PowerDNS, BIND and the emulator had started before the clusters; all are gone again.
    assert _processes_mentioning(state.root) == []
    assert [p for p in settings.fixed_ports().values() if not port_is_free(p)] == []
    assert (state.logs / "pdns.log").exists()  # the logs stay for the error message
