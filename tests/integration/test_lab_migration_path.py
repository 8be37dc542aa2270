"""The README's "The migration on the lab" path, command by command, as a user runs it: the
v1.20 world, the primary upgraded alone, the migration with the probe on, what users reach
after it, the rollback with the probe on, and the v1.20-era access again.

The commands are read from README.md (so the README cannot drift from what is tested) and run
as shell commands in a work directory holding a copy of ``inventories/lab``, against a private
lab (own state directory, ports moved by :data:`PORT_OFFSET`, region addresses 127.0.35.N)
that the README's own ``lab up --world v1.20`` starts and the test stops. The only rewrites
are :class:`tests.helpers.PrivateLab`'s and ``.venv/bin/`` to the installation under test.

Real parts: the lab's kube-apiservers and helm, PowerDNS, the emulator following the
primary's release, the bundled proxy playing each satellite and envproxy pod, the workspace
apps answering through them, the probe's requests and websockets on real sockets.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from coder_migrate.lab.paths import CacheLayout, StateLayout
from coder_migrate.lab.runtime import Lab
from coder_migrate.lab.settings import LabSettings
from tests.helpers import REPO, PrivateLab, readme_commands, relocated_inventory, run_as_user

pytestmark = pytest.mark.integration

#: Clear of the session's lab (0) and every other private lab of the tests.
PORT_OFFSET = 3500
#: Region addresses 127.0.35.N: no other test uses that block.
ADDRESS_BLOCK = 35
REGIONS = ("us-east", "eu-west", "ap-southeast")
SECTION = "## The migration on the lab"
"""The README section whose commands the test runs, exactly."""
COMMAND_TIMEOUT_SECONDS = 900
INVENTORY = "inventories/lab"
_SATELLITE_APP = r"^curl .*--platform-bot\.coder-{region}\..*127\.0\.1\.{n}:1708{n}/hello$"
_ENVPROXY_APP = r"^curl .*--platform-bot\.{region}\.coder\.lab\.internal.*127\.0\.1\.{n}:1718{n}/"
#: The README's commands in order, each recognised by a pattern (a step that moved or
#: vanished fails here, naming it).
STEPS = (
    ("lab up", r"coder-migrate lab up --world v1\.20$"),
    ("primary", r"coder-migrate apply -i inventories/lab --limit primary --no-dns "
                r"--auto-approve$"),
    ("plan", r"coder-migrate plan --migration v1\.20-to-v1\.21 -i inventories/lab$"),
    ("migrate", r"coder-migrate apply --migration v1\.20-to-v1\.21 -i inventories/lab "
                r"--auto-approve --probe$"),
    ("migrate status", r"coder-migrate migrate status -i inventories/lab$"),
    ("dns check", r"coder-migrate dns check -i inventories/lab$"),
    *((f"satellite {r}", _SATELLITE_APP.format(region=r, n=n))
      for n, r in enumerate(REGIONS, start=1)),
    ("rollback", r"coder-migrate rollback --migration v1\.20-to-v1\.21 -i inventories/lab "
                 r"--auto-approve --probe$"),
    *((f"envproxy {r}", _ENVPROXY_APP.format(region=r, n=n))
      for n, r in enumerate(REGIONS, start=1)),
    ("probe", r"coder-migrate probe -i inventories/lab --seconds 5$"),
)


@dataclass(frozen=True)
class UserShell:
    """Runs the README's lines in *workdir* against the private *lab*."""

    lab: PrivateLab
    workdir: Path

    def run(self, line: str, *, envproxy: str = "") -> subprocess.CompletedProcess[str]:
        """Run *line*; with *envproxy* (a provider's name), its README envproxy address
        (``http://127.0.1.N:1718N``) becomes the one the private lab registered for that
        provider: the lab keeps envproxies on 127.0.1.N and moves only their port."""
        command = self.lab.relocate(line)
        if envproxy:
            registered = self.pools()[envproxy]["envproxy_access_url"].rstrip("/")
            relocated = re.search(r"http://127\.0\.\d+\.(\d+):(\d+)", command)
            assert relocated is not None, command
            assert registered == f"http://127.0.1.{relocated[1]}:{relocated[2]}", (
                f"{line}: the lab registered {registered} for {envproxy}")
            command = command.replace(relocated[0], registered)
        else:
            assert "127.0.1." not in command, f"{command}: still aims at the default lab"
        return run_as_user(self.lab, self.workdir, command, COMMAND_TIMEOUT_SECONDS)

    def succeeds(self, line: str, *, envproxy: str = "") -> str:
        result = self.run(line, envproxy=envproxy)
        assert result.returncode == 0, f"{line}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        return result.stdout

    @property
    def settings(self) -> LabSettings:
        return LabSettings.create(port_offset=self.lab.port_offset, world="v1.20")

    @property
    def admin_token(self) -> str:
        return (self.lab.state_dir / "secrets" / "coder-token").read_text().strip()

    def primary(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.settings.coderd_port}{path}",
                         headers={"Session-Token": self.admin_token}, timeout=5)

    def pools(self) -> dict[str, dict[str, Any]]:
        listed = self.primary("/api/private/resource-pools").json()["kubernetes"]
        return {p["name"]: p for p in listed}

    def networking_v2(self) -> dict[str, Any]:
        return {name: p["enable_net_v2"] for name, p in self.pools().items()}


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[UserShell]:
    """A work directory with the inventory copy; the private lab is stopped and its data
    removed afterwards, whatever happened."""
    lab = PrivateLab(tmp_path / "lab", PORT_OFFSET, ADDRESS_BLOCK)
    workdir = tmp_path / "work"
    relocated_inventory(REPO / INVENTORY, workdir / INVENTORY, lab)
    try:
        yield UserShell(lab, workdir)
    finally:
        Lab(StateLayout(lab.state_dir), CacheLayout.default()).down()


def probe_lines(output: str) -> list[str]:
    """The probe's report: its first line and every line after it."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("probe: "))
    return lines[start:]


def check_probe(output: str, routes: str, token: str) -> list[str]:
    """0 failed per region and in total, each region's users on *routes* in that order."""
    lines = probe_lines(output)
    assert token not in output
    rows = {m.group(1): m for line in lines
            if (m := re.match(r"^([\w-]+): (\d+) failed; (\d+) of (\d+) requests", line))}
    assert sorted(rows) == sorted([*REGIONS, "total"]), "\n".join(lines)
    for name, row in rows.items():
        assert row.group(2) == "0", f"{name}: users saw failures:\n" + "\n".join(lines)
        assert int(row.group(4)) >= 10, f"{name}: too few requests:\n" + "\n".join(lines)
    for region in REGIONS:
        (line,) = [x for x in lines if x.startswith(f"{region}: ")]
        assert line.endswith(f"via {routes}"), line
    return lines


def check_app(shell: UserShell, line: str, host_part: str, *, envproxy: str = "") -> None:
    """The app answers: the echo app saw the request for the workspace's host, and never
    the user's session token."""
    output = shell.succeeds(line, envproxy=envproxy)
    echoed = json.loads(output)
    assert echoed["path"] == "/hello"
    assert host_part in echoed["headers"].get("X-Forwarded-Host", "")
    assert shell.admin_token not in output


def test_the_readme_migration_path_with_users_online(shell: UserShell) -> None:
    lines = readme_commands(SECTION)
    assert len(lines) == len(STEPS), "\n".join(lines)
    for (name, pattern), line in zip(STEPS, lines, strict=True):
        assert re.search(pattern, line), f"README step {name!r} is not {pattern!r}: {line}"
    step = dict(zip((name for name, _ in STEPS), lines, strict=True))
    times: dict[str, float] = {}
    outputs: dict[str, str] = {}

    def run(name: str) -> str:
        started = time.monotonic()
        outputs[name] = shell.succeeds(step[name])
        times[name] = time.monotonic() - started
        return outputs[name]

    run("lab up")
    assert shell.primary("/api").headers["coder-version"] == "1.20.0"
    run("primary")
    # Straight on, as a user goes: the plan refuses regions while the primary runs 1.20.
    plan = run("plan")
    assert shell.primary("/api").headers["coder-version"] == "1.21.0"
    assert set(shell.networking_v2().values()) == {False}
    for region in REGIONS:
        assert f"workspace provider {region} on the primary" in plan, plan

    migrated = run("migrate")
    assert set(shell.networking_v2().values()) == {True}
    report = check_probe(migrated, "envproxy then satellite", shell.admin_token)

    status = run("migrate status")
    for region in REGIONS:
        assert region in status
    run("dns check")
    for region in REGIONS:
        check_app(shell, step[f"satellite {region}"], f"coder-{region}.")

    rolled_back = run("rollback")
    assert set(shell.networking_v2().values()) == {False}
    back = check_probe(rolled_back, "satellite then envproxy", shell.admin_token)
    for region in REGIONS:
        check_app(shell, step[f"envproxy {region}"], f"{region}.coder.lab.internal",
                  envproxy=region)
    alone = check_probe(run("probe"), "envproxy", shell.admin_token)

    print("\n" + "\n".join(["apply --migration --probe:", *report,
                            "rollback --migration --probe:", *back, "probe:", *alone]))
    print(", ".join(f"{name}: {seconds:.1f} s" for name, seconds in times.items()))
