"""``!vault`` values under ``ansible-playbook``: the password given to the playbook itself
(``--vault-password-file``) reaches the roles' modules, which run the engine on the secret;
without it the task fails with one line; the secret is in no output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.coderd import CoderEmulator, EmulatorFactory
from tests.fixtures.lab import LabHandle
from tests.helpers import REPO, lab_inventory
from tests.integration.test_deploy import unique_tag

pytestmark = pytest.mark.integration

ADDRESS_BLOCK = 21
VAULT_PASSWORD = "playbook-vault-password-5c1e"


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _environment() -> dict[str, str]:
    """The test's environment without any vault password Ansible would find by itself."""
    bin_dir = Path(sys.executable).parent
    environment = {
        key: value for key, value in os.environ.items()
        if key not in ("ANSIBLE_VAULT_PASSWORD_FILE", "ANSIBLE_VAULT_IDENTITY_LIST")
    }
    return {**environment, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1"}


def _check_playbook(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("ansible-playbook"), "-i", str(inventory), "playbooks/site.yml", "--check",
         *extra],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
        env=_environment(),
    )


@pytest.fixture
def vaulted(
    lab: LabHandle, coderd_factory: EmulatorFactory, tmp_path: Path
) -> Iterator[tuple[Path, Path, str]]:
    """A lab inventory whose session token is a ``!vault`` value, its password file, the
    token."""
    emulator: CoderEmulator = coderd_factory("v1.21")
    token = emulator.token_file.read_text(encoding="utf-8").strip()
    password_file = tmp_path / "vault-password"
    password_file.write_text(VAULT_PASSWORD + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    inventory = lab_inventory(
        tmp_path / "inventory", tag=unique_tag("vp"), address_block=ADDRESS_BLOCK,
        primary_url=emulator.url, token_file=emulator.token_file,
    )
    encrypted = subprocess.run(
        [_tool("ansible-vault"), "encrypt_string", "--vault-password-file", str(password_file),
         "--name", "coder_session_token", token],
        capture_output=True, text=True, check=True, env=_environment(),
    ).stdout
    shared = inventory / "group_vars" / "all" / "coder.yml"
    data = yaml.safe_load(shared.read_text(encoding="utf-8"))
    del data["coder_session_token"]
    shared.write_text(yaml.safe_dump(data, sort_keys=False) + encrypted, encoding="utf-8")
    yield inventory, password_file, token


def test_the_playbooks_vault_password_reaches_the_engine(
    vaulted: tuple[Path, Path, str],
) -> None:
    inventory, password_file, token = vaulted

    without = _check_playbook(inventory)
    assert without.returncode != 0
    failures = [line for line in without.stdout.splitlines() if line.startswith("fatal:")]
    assert failures, without.stdout[-3000:]
    assert "coder_session_token" in without.stdout
    assert "vault" in without.stdout

    with_password = _check_playbook(inventory, "--vault-password-file", str(password_file))
    assert with_password.returncode == 0, with_password.stdout[-3000:]
    assert "failed=0" in with_password.stdout

    for run in (without, with_password):
        assert token not in run.stdout + run.stderr
        assert VAULT_PASSWORD not in run.stdout + run.stderr
