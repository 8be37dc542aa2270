"""The first play of ``site.yml`` refuses what ``coder-migrate inventory validate`` refuses,
including problems no single host owns (no primary, no host at all, no region): the same line,
once (not once per host), with a path relative to the inventory, and the run stops before the
second play. Runs ``ansible-playbook --check --tags validate`` as users do; no server is
started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, copy_inventory
from tests.unit.test_inventory_mistakes import MISTAKES, Mistake, broken_inventory, snapshot


def validate_play(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", str(inventory), "playbooks/site.yml",
         "--check", "--tags", "validate", *extra],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1"},
    )


# A token file inside the inventory directory is read by Ansible itself as an inventory file,
# before any play runs, and every play lists the host named after the token: the reason the
# rule exists. The CLI refuses it before Ansible is involved (test_inventory_mistakes); the
# play refuses it too, but only after Ansible has printed that host, so it is not run here.
PLAY_MISTAKES = [m for m in MISTAKES if m.id != "token-file-inside-the-inventory"]


@pytest.mark.parametrize("mistake", PLAY_MISTAKES, ids=[m.id for m in PLAY_MISTAKES])
def test_the_first_play_refuses_each_mistake_once(mistake: Mistake, tmp_path: Path) -> None:
    inventory = broken_inventory(tmp_path, mistake)
    before = snapshot(inventory)

    result = validate_play(inventory)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert output.count("fatal: [") == 1, output[-3000:]
    # Ansible's error line carries the message as it is: one problem per line.
    lines = output.splitlines()
    assert f"[ERROR]: Task failed: Action failed: {mistake.first_line}" in lines, output[-3000:]
    assert str(tmp_path) not in output.replace(f"-i {inventory}", "")
    for secret in mistake.hidden:
        assert secret not in output
    assert "PLAY [Import" not in output and "Converge" not in output
    assert snapshot(inventory) == before


def test_the_example_inventory_passes() -> None:
    result = validate_play(REPO / "inventories" / "example")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "failed=1" not in result.stdout and "localhost " in result.stdout


def test_a_limit_still_checks_the_whole_inventory(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    (inventory / "host_vars" / "us-west.yml").write_text(
        (inventory / "host_vars" / "us-west.yml").read_text().replace(
            "coder_kube_context: prod-us-west", "coder_kube_context: prod-eu-west")
    )
    result = validate_play(inventory, "--limit", "us-east")
    assert result.returncode != 0
    assert "eu-west: coder_kube_context: expected a Helm release no other site uses" in (
        result.stdout
    )
