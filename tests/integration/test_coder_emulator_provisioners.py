"""The v2 emulator's external provisioners: the serve endpoint's PSK check as
``coderd/httpmw/provisionerdaemon.go`` answers it (no key configured 400 "External provisioner
daemons not enabled"; no header 401 "provisioner daemon auth token required"; another key 401
"provisioner daemon auth token invalid"), the daemons list (``codersdk.ProvisionerDaemons``:
``GET /api/v2/provisionerdaemons``; ``scope: organization`` added to a daemon's tags as
``provisionersdk.MutateTags`` does), and the lab's stand-in daemon process dialling it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from coder_migrate import sensitive
from coder_migrate.engine.provisioners import new_psk
from tests.fixtures.coderd import CoderEmulator
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

SERVE = "/api/v2/organizations/default/provisionerdaemons/serve"


def refusal(emulator: CoderEmulator, psk: str | None) -> tuple[int, str]:
    headers = {} if psk is None else {"Coder-Provisioner-PSK": psk}
    response = httpx.get(emulator.url + SERVE, params={"provisioner": "terraform"},
                         headers=headers, timeout=10)
    return response.status_code, str(response.json()["message"])


def listed(emulator: CoderEmulator) -> list[dict[str, Any]]:
    response = emulator.admin("GET", "/api/v2/provisionerdaemons")
    assert response.status_code == 200, response.text
    return list(response.json())


def daemon(emulator: CoderEmulator, psk: str, tags: str, name: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CODER_URL": emulator.url, "CODER_PROVISIONER_DAEMON_PSK": psk,
           "CODER_PROVISIONERD_TAGS": tags, "CODER_LAB_POD_NAME": name,
           "CODER_LAB_REPLICAS": "2"}
    return subprocess.Popen([sys.executable, "-m", "coder_migrate.lab.provisionerd"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_the_serve_endpoint_takes_only_the_primarys_key(
    coderd_factory: Callable[..., CoderEmulator],
) -> None:
    emulator = coderd_factory("v2")
    key = new_psk()
    assert refusal(emulator, key) == (400, "External provisioner daemons not enabled")
    assert emulator.admin("PUT", "/emulator/provisioner-psk", {"psk": key}).json() == {
        "changed": True}
    assert refusal(emulator, None) == (401, "provisioner daemon auth token required")
    assert refusal(emulator, key[::-1]) == (401, "provisioner daemon auth token invalid")
    assert httpx.get(emulator.url + "/api/v2/provisionerdaemons", timeout=10).status_code == 401

    good = daemon(emulator, key, "region=eu-west,cloud=aws", "eu")
    bad = daemon(emulator, sensitive.register("x" * 64), "region=us-east", "us")
    try:
        found = wait_for(lambda: len(listed(emulator)) == 2 and listed(emulator),
                         "two daemons listed")
        assert sorted(d["name"] for d in found) == ["eu-0", "eu-1"]
        assert found[0]["tags"] == {"region": "eu-west", "cloud": "aws",
                                    "scope": "organization", "owner": ""}
        assert found[0]["provisioners"] == ["terraform"]
        # A new key is a restart of the primary: connections end; the old key is refused.
        second = new_psk()
        emulator.admin("PUT", "/emulator/provisioner-psk", {"psk": second})
        time.sleep(3)
        assert refusal(emulator, key) == (401, "provisioner daemon auth token invalid")
    finally:
        for process in (good, bad):
            process.terminate()
        outputs = [p.communicate(timeout=10)[0].decode() for p in (good, bad)]
    assert "refused: 401" in outputs[1] and "connected" not in outputs[1]
    assert "connected" in outputs[0] and "refused: 401" in outputs[0]
    for text in outputs:
        assert key not in text and second not in text
