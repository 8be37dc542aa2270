"""The README's "Coder v2 on the lab" path, command by command, as a user runs it.

The commands are read from README.md (so the README cannot drift from what is tested) and run
as shell commands in a work directory holding a copy of ``inventories/lab-v2``. They run
against a private lab (own state directory, ports moved by :data:`PORT_OFFSET`, proxies on
127.0.30.N) that the test starts with the README's own ``lab up --coder v2`` and stops at the
end, so the session's v1 lab and the tests using it are never touched. The only rewrites are
:class:`tests.helpers.PrivateLab`'s (the default lab's places to the private one's) and
``.venv/bin/`` to the installation under test. After each step the test checks what the user
would: status rows, the app through each proxy, the DNS answers, the token, and what removing
a region leaves behind.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest
from kubernetes import client as kube_client

from coder_migrate.lab.paths import CacheLayout, StateLayout
from coder_migrate.lab.runtime import Lab
from coder_migrate.lab.settings import LabSettings
from coder_migrate.lab.tools import helm_binary
from tests.fixtures.lab import Helm, kube_api
from tests.helpers import REPO, PrivateLab, readme_commands, relocated_inventory, run_as_user

pytestmark = pytest.mark.integration

#: Clear of the session's lab (0), test_lab_lifecycle (1000-1200) and test_lab_pods (2500).
PORT_OFFSET = 3000
#: Proxies on 127.0.30.N: no other test uses that block.
ADDRESS_BLOCK = 30
REGIONS = ("us-east", "eu-west", "ap-southeast")
REMOVED = "ap-southeast"
ZONE = "lab.coder-migrate.test"
APP_HOST = "code-server--main--migration-check-us-east--platform-bot.coder-{region}." + ZONE
TOKEN_SECRET = "coder-workspace-proxy-token"
PROXY_NAMESPACE = "coder-proxy"
SECTION = "## Coder v2 on the lab"
"""The README section whose commands the test runs, exactly."""
COMMAND_TIMEOUT_SECONDS = 600
#: The README's commands in order, each recognised by a pattern (a step that moved or
#: vanished fails here, naming it).
STEPS = (
    ("lab up", r"coder-migrate lab up --coder v2$"),
    ("apply", r"coder-migrate apply -i inventories/lab-v2 --auto-approve$"),
    ("status", r"coder-migrate status -i inventories/lab-v2$"),
    ("app us-east", r"^curl .*coder-us-east\..*127\.0\.1\.1:17081/"),
    ("app eu-west", r"^curl .*coder-eu-west\..*127\.0\.1\.2:17082/"),
    ("app ap-southeast", r"^curl .*coder-ap-southeast\..*127\.0\.1\.3:17083/"),
    ("token lost", r"kubectl --context lab-eu-west .*delete secret " + TOKEN_SECRET + "$"),
    ("token regenerated", r"coder-migrate apply -i inventories/lab-v2 --auto-approve$"),
    ("region removed", r"^cp -r inventories/lab-v2 inventories/my-lab-v2 .*ap-southeast"),
    ("apply --force", r"coder-migrate apply -i inventories/my-lab-v2 --auto-approve --force$"),
)


@dataclass(frozen=True)
class UserShell:
    """Runs the README's lines in *workdir* against the private *lab*."""

    lab: PrivateLab
    workdir: Path

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        command = self.lab.relocate(line)
        assert "127.0.1." not in command, f"{command}: still aims at the default lab"
        return run_as_user(self.lab, self.workdir, command, COMMAND_TIMEOUT_SECONDS)

    def succeeds(self, line: str) -> str:
        result = self.run(line)
        assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    @property
    def settings(self) -> LabSettings:
        return LabSettings.create(port_offset=self.lab.port_offset, coder_mode="v2")

    def address(self, region: str) -> str:
        return f"127.0.{self.lab.address_block}.{REGIONS.index(region) + 1}"

    @property
    def kubeconfig(self) -> Path:
        return self.lab.state_dir / "kubeconfig"

    @property
    def admin_token(self) -> str:
        return (self.lab.state_dir / "secrets" / "coder-token").read_text().strip()


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[UserShell]:
    """A work directory with the inventory copy; the private lab is stopped and its data
    (clusters, zones, secrets) removed afterwards, whatever happened."""
    lab = PrivateLab(tmp_path / "lab", PORT_OFFSET, ADDRESS_BLOCK)
    workdir = tmp_path / "work"
    relocated_inventory(REPO / "inventories" / "lab-v2", workdir / "inventories" / "lab-v2", lab)
    try:
        yield UserShell(lab, workdir)
    finally:
        Lab(StateLayout(lab.state_dir), CacheLayout.default()).down()


def status_rows(output: str) -> dict[str, dict[str, str]]:
    """The status table's rows by site (cells of the box-drawn table)."""
    lines = [line for line in output.splitlines() if line.startswith(("┃", "│"))]
    header = [cell.strip() for cell in lines[0].strip("┃").split("┃")]
    rows = [[cell.strip() for cell in line.strip("│").split("│")] for line in lines[1:]]
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def dns_answer(shell: UserShell, name: str) -> tuple[int, list[str]]:
    """Rcode and A addresses the lab's PowerDNS gives for *name*."""
    query = dns.message.make_query(f"{name}.", dns.rdatatype.A)
    reply = dns.query.udp(query, "127.0.0.1", port=shell.settings.powerdns_dns_port, timeout=5)
    addresses = [item.address for rrset in reply.answer for item in rrset
                 if rrset.rdtype == dns.rdatatype.A]
    return reply.rcode(), addresses


def live_proxies(shell: UserShell) -> list[str]:
    response = httpx.get(f"http://127.0.0.1:{shell.settings.coderd_port}/api/v2/workspaceproxies",
                         headers={"Coder-Session-Token": shell.admin_token}, timeout=10)
    response.raise_for_status()
    return sorted(p["name"] for p in response.json()["regions"] if p["name"] != "primary")


def proxy_token(shell: UserShell, region: str) -> str:
    with kube_api(shell.kubeconfig, f"lab-{region}") as api:
        secret = kube_client.CoreV1Api(api).read_namespaced_secret(TOKEN_SECRET, PROXY_NAMESPACE)
    assert secret.data is not None
    return base64.b64decode(secret.data["token"]).decode()


def check_app(shell: UserShell, line: str, region: str) -> None:
    """The app answers through *region*'s proxy: the echo app saw the request on that proxy's
    wildcard, and never the user's session token."""
    deadline = time.monotonic() + 60
    result = shell.run(line)
    while result.returncode != 0 and time.monotonic() < deadline:  # e.g. a pod restarting
        time.sleep(1)
        result = shell.run(line)
    assert result.returncode == 0, f"{line}: curl exited {result.returncode}: {result.stderr}"
    echoed = json.loads(result.stdout)
    assert echoed["path"] == "/hello"
    assert echoed["headers"]["X-Forwarded-Host"] == APP_HOST.format(region=region)
    assert shell.admin_token not in result.stdout


def check_deployed(shell: UserShell, status: str) -> None:
    rows = status_rows(status)
    assert sorted(rows) == sorted(["primary", *REGIONS]), status
    for site, row in rows.items():
        assert (row["release"], row["registration"], row["reachable"]) == (
            "deployed", "ok", "yes"), f"{site}: {row}"
    for region in REGIONS:
        for name in (f"coder-{region}.{ZONE}", APP_HOST.format(region=region)):
            assert dns_answer(shell, name) == (dns.rcode.NOERROR, [shell.address(region)]), name
    assert live_proxies(shell) == sorted(REGIONS)


def check_token_regenerated(shell: UserShell, old_token: str, app_line: str) -> None:
    assert proxy_token(shell, "eu-west") != old_token
    # The primary refuses the old token; the proxy runs on the new one (its app answers).
    refused = httpx.post(
        f"http://127.0.0.1:{shell.settings.coderd_port}/api/v2/workspaceproxies/me/register",
        headers={"Coder-External-Proxy-Token": old_token}, json={}, timeout=10,
    )
    assert refused.status_code == 401, refused.text
    check_app(shell, app_line, "eu-west")


def check_region_removed(shell: UserShell) -> None:
    assert live_proxies(shell) == ["eu-west", "us-east"]
    helm = Helm(binary=helm_binary(), kubeconfig=shell.kubeconfig)
    releases = helm.run(f"lab-{REMOVED}", "list", "-n", PROXY_NAMESPACE, "-q").stdout.split()
    assert releases == []
    for name in (f"coder-{REMOVED}.{ZONE}", APP_HOST.format(region=REMOVED),
                 f"_coder-migrate-a.coder-{REMOVED}.{ZONE}"):
        assert dns_answer(shell, name) == (dns.rcode.NXDOMAIN, []), name
    for region in ("us-east", "eu-west"):
        assert dns_answer(shell, f"coder-{region}.{ZONE}")[1] == [shell.address(region)]


def test_the_readme_v2_path(shell: UserShell) -> None:
    commands = readme_commands(SECTION)
    assert len(commands) == len(STEPS), commands
    step = dict(zip((name for name, _ in STEPS), commands, strict=True))
    for (name, pattern), line in zip(STEPS, commands, strict=True):
        assert re.search(pattern, line), f"README step {name!r} is not {pattern!r}: {line}"

    shell.succeeds(step["lab up"])
    shell.succeeds(step["apply"])
    check_deployed(shell, shell.succeeds(step["status"]))
    for region in REGIONS:
        check_app(shell, step[f"app {region}"], region)

    old_token = proxy_token(shell, "eu-west")
    shell.succeeds(step["token lost"])
    shell.succeeds(step["token regenerated"])
    check_token_regenerated(shell, old_token, step["app eu-west"])

    shell.succeeds(step["region removed"])
    shell.succeeds(step["apply --force"])
    check_region_removed(shell)
    check_app(shell, step["app us-east"], "us-east")
