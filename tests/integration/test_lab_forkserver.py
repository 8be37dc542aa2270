"""The lab's pod fork server (coder_migrate/lab/forkserver.py): a region pod forked from the
warmed process is still a pod of its own: only the pod's env, its own log, the supervisor's
child (waited for, signalled, its exit status seen), answering on its address at once.
(Its env is set after the fork: /proc/PID/environ shows the fork server's, the pod sees its own.)"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx

from coder_migrate.lab.pod_processes import ForkServerClient, is_child_subreaper
from coder_migrate.lab.pod_spec import host_environment
from coder_migrate.lab.process import start_ticks
from tests.helpers import wait_for


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def test_a_forked_pod_has_the_pods_env_its_log_and_is_the_supervisors_child(
    tmp_path: Path,
) -> None:
    host = "127.0.2.21"
    port = _free_port(host)
    (tmp_path / "empty.env").touch()
    env = {
        **host_environment(os.environ),
        "CODER_PRIMARY_ACCESS_URL": "http://127.0.0.1:9",
        "CODER_PROXY_MODE": "satellite",
        "CODER_PROXY_SATELLITE_KEY_FILE": str(tmp_path / "satellite.key"),
        "CODER_HTTP_ADDRESS": f"{host}:{port}",
        "CODER_PROXY_ENV_FILE": str(tmp_path / "empty.env"),
        }
    server = ForkServerClient(tmp_path / "forkserver.log")
    pods = []
    try:
        started = time.monotonic()
        pod = server.spawn("coder_migrate.proxy", env, tmp_path / "pod.log")
        assert pod is not None, (tmp_path / "forkserver.log").read_text()
        pods.append(pod)
        key = wait_for(
            lambda: httpx.get(f"http://{host}:{port}/api/private/satellites/key", timeout=2)
            .json()["key"],
            "the forked satellite's key",
        )
        answered = time.monotonic() - started
        assert key.startswith("-----BEGIN PUBLIC KEY-----")
        # The pod runs with its own env: the key where its env says, its own address.
        assert (tmp_path / "satellite.key").is_file()
        assert _parent(pod.pid) == os.getpid()
        assert "listening on" in (tmp_path / "pod.log").read_text()

        # A second pod is another process; killing one leaves the other serving.
        other_port = _free_port(host)
        other = server.spawn("coder_migrate.proxy",
                             {**env, "CODER_HTTP_ADDRESS": f"{host}:{other_port}",
                              "CODER_PROXY_SATELLITE_KEY_FILE": str(tmp_path / "other.key")},
                             tmp_path / "other.log")
        assert other is not None and other.pid != pod.pid
        pods.append(other)
        os.kill(pod.pid, signal.SIGKILL)
        assert wait_for(lambda: pod.poll() is not None, "the killed pod reaped") is True
        assert pod.poll() == -signal.SIGKILL and start_ticks(pod.pid) is None
        other_key = wait_for(
            lambda: httpx.get(f"http://{host}:{other_port}/api/private/satellites/key",
                              timeout=2).json()["key"],
            "the other pod still serving",
        )
        assert other_key != key and (tmp_path / "other.key").is_file()
        other.send_signal(signal.SIGTERM)
        assert other.wait(timeout=20) == 0
        print(f"forked pod answered {answered:.3f} s after the request")
    finally:
        for process in pods:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        server.close()
    assert server.process is None
    # Closed, the client's process is no longer the subreaper of every orphan below it (here:
    # pytest, whose later tests' lab processes would stay zombies under it).
    assert not is_child_subreaper()
