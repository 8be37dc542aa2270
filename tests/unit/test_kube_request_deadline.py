"""An apiserver that accepts connections and never answers (a stopped or wedged process
keeps its listening socket) stops the call with one line naming the cluster, within the
adapter's deadline, instead of holding the apply (docs/runbook.md, "What users see when
something breaks during the migration")."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from coder_migrate.errors import KubeError
from coder_migrate.providers import kube


@pytest.fixture
def silent_apiserver() -> Iterator[int]:
    """A listening socket nobody reads: the kernel completes the handshake, no byte comes
    back."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def _kubeconfig(path: Path, port: int) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "silent",
        "clusters": [{"name": "silent", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "silent", "user": {"token": "kube-token-9f3e"}}],
        "contexts": [{"name": "silent", "context": {"cluster": "silent", "user": "silent"}}],
    }))
    return path


@pytest.mark.parametrize("call", ["read", "write"])
def test_a_silent_apiserver_is_a_clear_error_within_the_deadline(
    tmp_path: Path, silent_apiserver: int, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    monkeypatch.setattr(kube, "REQUEST_TIMEOUT_SECONDS", (1.0, 1.0))
    cluster = kube.KubeCluster("silent", str(_kubeconfig(tmp_path / "config", silent_apiserver)))
    started = time.monotonic()
    with pytest.raises(KubeError) as raised:
        if call == "read":
            asyncio.run(cluster.namespace_exists("coder"))
        else:
            asyncio.run(cluster.ensure_namespace("coder"))
    elapsed = time.monotonic() - started
    assert str(raised.value).startswith("silent: ")
    assert "the apiserver did not answer (deadlines: connect 1 s, read 1 s)" in str(raised.value)
    assert "kube-token-9f3e" not in str(raised.value)
    # One retry of a read at most (configuration.retries = 1): two read deadlines.
    assert elapsed < 6, elapsed
