"""Verify the coder_proxy_host role: the files it writes and the service they describe.

systemd is not PID 1 on the test machine, so the unit's ExecStart command line is started
here with the env file's variables, the way systemd would, against the lab's Coder emulator.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coder_migrate.proxy.config import parse_env_file

SCENARIO = Path(__file__).resolve().parent.parent
ROLES = SCENARIO.parent.parent.parent

BASE = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "host"
ENV_FILE = BASE / "etc" / "coder.d" / "coder-workspace-proxy.env"
UNIT_FILE = BASE / "etc" / "systemd" / "system" / "coder-workspace-proxy.service"
STATE_DIR = BASE / "var" / "lib" / "coder-workspace-proxy"
THROWAWAY_TOKEN = "molecule-throwaway-token-0000"
LAB_PRIMARY = "http://127.0.0.1:17080"
STARTUP_TIMEOUT_SECONDS = 30.0


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT_FILE.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_env_file_is_root_only_and_carries_the_settings(host) -> None:  # type: ignore[no-untyped-def]
    env_file = host.file(str(ENV_FILE))
    assert env_file.is_file
    assert env_file.user == "root"
    assert env_file.group == "root"
    assert env_file.mode == 0o600
    values = parse_env_file(ENV_FILE)
    assert values["CODER_PROXY_SESSION_TOKEN"] == THROWAWAY_TOKEN
    assert values["CODER_PROXY_MODE"] == "satellite"
    assert values["CODER_PRIMARY_ACCESS_URL"] == LAB_PRIMARY
    assert values["CODER_ACCESS_URL"] == "http://127.0.0.1:17099"
    assert values["CODER_WILDCARD_ACCESS_URL"] == "*.molecule-proxy-host.lab.coder-migrate.test"
    assert values["CODER_PROXY_SATELLITE_KEY_FILE"] == str(STATE_DIR / "satellite.key")
    assert values["CODER_PROMETHEUS_ENABLE"] == "true"
    assert host.file(str(STATE_DIR)).mode == 0o700


def test_unit_runs_the_proxy_with_the_env_file_hardened(host) -> None:  # type: ignore[no-untyped-def]
    unit = host.file(str(UNIT_FILE))
    assert unit.mode == 0o644
    settings = _unit_settings()
    assert settings["EnvironmentFile"] == [str(ENV_FILE)]
    executable, *arguments = shlex.split(settings["ExecStart"][0])
    assert Path(executable).name == "coder-migrate"
    assert os.access(executable, os.X_OK)
    assert arguments == ["proxy", "serve"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["User"] == ["root"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ReadWritePaths"] == [str(STATE_DIR)]
    assert settings["WantedBy"] == ["multi-user.target"]
    assert THROWAWAY_TOKEN not in UNIT_FILE.read_text()


def test_systemd_accepts_the_unit(host) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    result = host.run(f"systemd-analyze verify {shlex.quote(str(UNIT_FILE))}")
    assert result.rc == 0, result.stdout + result.stderr
    assert str(UNIT_FILE) not in result.stderr, result.stderr


def test_a_new_token_is_neither_printed_nor_diffed(host, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    new_token = "molecule-throwaway-token-1111"
    extra_vars = tmp_path / "extra-vars.json"
    extra_vars.write_text(
        json.dumps(
            {
                "coder_proxy_host_session_token": new_token,
                "ansible_python_interpreter": sys.executable,
            }
        )
    )
    result = host.run(
        f"ANSIBLE_ROLES_PATH={shlex.quote(str(ROLES))} ansible-playbook -i localhost, -c local "
        f"--check --diff -vv -e @{shlex.quote(str(extra_vars))} "
        f"{shlex.quote(str(SCENARIO / 'converge.yml'))}"
    )
    assert result.rc == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert new_token not in output
    assert THROWAWAY_TOKEN not in output
    # The change is still reported, and check mode left the file alone.
    assert "changed=1" in output
    assert parse_env_file(ENV_FILE)["CODER_PROXY_SESSION_TOKEN"] == THROWAWAY_TOKEN


@pytest.fixture
def running_unit(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The unit's ExecStart with the env file as its environment, on free loopback ports."""
    command = shlex.split(_unit_settings()["ExecStart"][0])
    port, metrics_port = _free_loopback_port(), _free_loopback_port()
    environment = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **parse_env_file(ENV_FILE)}
    environment["CODER_HTTP_ADDRESS"] = f"127.0.0.1:{port}"
    environment["CODER_ACCESS_URL"] = f"http://127.0.0.1:{port}"
    environment["CODER_PROMETHEUS_ADDRESS"] = f"127.0.0.1:{metrics_port}"
    log_path = tmp_path / "proxy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=environment, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"the proxy exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the proxy did not answer /healthz:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url, f"http://127.0.0.1:{metrics_port}"
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_the_unit_command_serves_a_satellite(running_unit: tuple[str, str]) -> None:
    url, metrics_url = running_unit
    answer = httpx.get(f"{url}/healthz", timeout=5, trust_env=False)
    assert answer.status_code == 200
    key = httpx.get(f"{url}/api/private/satellites/key", timeout=5, trust_env=False)
    assert key.status_code == 200
    body = key.json()
    assert body["key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert len(body["fingerprint"]) == 64
    key_file = STATE_DIR / "satellite.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    # Everything that is not workspace traffic goes to the primary (the lab's emulator, whose
    # every answer names its version); /cem-healthz a satellite answers itself.
    relayed = httpx.get(f"{url}/api/v0/orgs", timeout=10, trust_env=False)
    assert relayed.status_code == 401, relayed.text
    assert relayed.json()["error"]["code"] == "unauthorized"
    assert relayed.headers["coder-version"] == "1.21.0"
    metrics = httpx.get(f"{metrics_url}/metrics", timeout=5, trust_env=False)
    assert metrics.status_code == 200
