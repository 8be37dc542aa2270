"""Verify the inventory_validate role through the playbook users run."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

REPO = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]).resolve().parent.parent
PLAYBOOK = REPO / "playbooks" / "validate.yml"


def _play(host, inventory: Path):  # type: ignore[no-untyped-def]
    return host.run(
        f"cd {shlex.quote(str(REPO))} && ansible-playbook --check "
        f"-i {shlex.quote(str(inventory))} {shlex.quote(str(PLAYBOOK))}"
    )


def test_the_example_inventory_passes(host) -> None:  # type: ignore[no-untyped-def]
    result = _play(host, REPO / "inventories" / "example")
    assert result.rc == 0, result.stdout + result.stderr
    assert "failed=0" in result.stdout


def test_a_broken_inventory_fails_with_file_and_key(host, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "inventory"
    host.run_test(f"cp -r {REPO / 'inventories' / 'example'} {broken}")
    region = broken / "host_vars" / "eu-west.yml"
    region.write_text(region.read_text().replace('"*.coder-eu-west', '"coder-eu-west'))
    result = _play(host, broken)
    assert result.rc != 0
    # Outside the current directory, paths are relative to the inventory; the problem is
    # reported once, not once per host.
    output = result.stdout + result.stderr
    line = (
        "host_vars/eu-west.yml: eu-west: coder_wildcard_host: "
        "expected a wildcard host of the form '*.<domain>'"
    )
    assert line in output
    assert str(broken) not in output.replace(f"-i {broken}", "")
    assert output.count("fatal: [") == 1
