"""Ansible's own formats: an INI ``hosts`` file, and ``!vault`` values decrypted by
ansible-vault only when the secret is used, with Ansible's vault password options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from coder_migrate import sensitive
from coder_migrate.cli import main
from coder_migrate.errors import SecretError
from coder_migrate.inventory import load_topology, vault
from tests.helpers import EXAMPLE_INVENTORY, copy_inventory

INI_HOSTS = """# The example inventory's hosts in Ansible's INI format.
[coder_primary]
primary

[coder_regions]
us-east
us-west
eu-west coder_region_display_name="EU West"
ap-southeast
australia-southeast1
"""

VAULT_PASSWORD = "correct horse battery staple"
TOKEN = "vaulted-session-token-0b7e"


def ini_inventory(tmp_path: Path) -> Path:
    inventory = copy_inventory(tmp_path)
    (inventory / "hosts.yml").unlink()
    (inventory / "hosts").write_text(INI_HOSTS, encoding="utf-8")
    return inventory


def test_an_ini_inventory_reads_as_its_yaml_twin(tmp_path: Path) -> None:
    from_ini = load_topology(ini_inventory(tmp_path))
    from_yaml = load_topology(EXAMPLE_INVENTORY)
    assert from_ini.model_dump(exclude={"source"}) == from_yaml.model_dump(exclude={"source"})


def test_a_problem_in_an_ini_hosts_file_names_it(tmp_path: Path) -> None:
    inventory = ini_inventory(tmp_path)
    hosts = inventory / "hosts"
    hosts.write_text(hosts.read_text().replace("\nap-southeast\n",
                                               "\nap-southeast coder_namespace=Coder_NS\n"))
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        "error: hosts: ap-southeast: coder_namespace: expected a Kubernetes name (lowercase "
        "letters, digits and '-', at most 63), found 'Coder_NS'"
    ]


def _ansible(tool: str) -> str:
    return str(Path(sys.executable).parent / tool)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "vault-password"
    path.write_text(VAULT_PASSWORD + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def vaulted(tmp_path: Path, password_file: Path) -> Path:
    """The example inventory with its session token as a !vault value."""
    encrypted = subprocess.run(
        [_ansible("ansible-vault"), "encrypt_string", "--vault-password-file",
         str(password_file), "--name", "coder_session_token", TOKEN],
        capture_output=True, text=True, check=True,
    ).stdout
    inventory = copy_inventory(tmp_path)
    shared = inventory / "group_vars" / "all" / "coder.yml"
    text = shared.read_text().replace("coder_session_token:\n  env: CODER_SESSION_TOKEN\n", "")
    shared.write_text(text + encrypted)
    return inventory


def test_a_vault_value_needs_no_password_until_it_is_used(
    vaulted: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    vault.configure(password_files=(), vault_ids=())
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(vaulted)])
    assert result.exit_code == 0, result.output
    topology = load_topology(vaulted)
    assert topology.session_token.vault is not None
    assert topology.session_token.describe() == (
        "an ansible-vault encrypted value (!vault) in the inventory"
    )

    with pytest.raises(SecretError, match="give --vault-password-file or --vault-id"):
        topology.session_token.resolve(vaulted)

    vault.configure(password_files=(password_file,))
    try:
        assert topology.session_token.resolve(vaulted) == TOKEN
    finally:
        vault.configure(password_files=())
    assert TOKEN in sensitive.registered()
    assert sensitive.scrub(f"echoed {TOKEN}") == "echoed (sensitive)"


def test_ansible_vault_password_file_in_the_environment_works(
    vaulted: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(password_file))
    topology = load_topology(vaulted)
    assert topology.session_token.resolve(vaulted) == TOKEN


def test_show_masks_the_vault_text_and_the_options_are_on_every_inventory_command(
    vaulted: Path, password_file: Path
) -> None:
    result = CliRunner().invoke(main, ["inventory", "show", "-i", str(vaulted), "--output",
                                       "json", "--vault-password-file", str(password_file)])
    assert result.exit_code == 0, result.output
    assert '"vault": "(encrypted)"' in result.stdout
    assert "$ANSIBLE_VAULT" not in result.stdout
    for command in (["plan"], ["apply"], ["status"], ["migrate", "plan"], ["runbook"],
                    ["dns", "check"], ["inventory", "validate"]):
        help_text = CliRunner().invoke(main, [*command, "--help"]).output
        assert "--vault-password-file" in help_text and "--vault-id" in help_text, command


def test_a_vault_value_outside_a_secret_is_refused(tmp_path: Path, password_file: Path) -> None:
    encrypted = subprocess.run(
        [_ansible("ansible-vault"), "encrypt_string", "--vault-password-file",
         str(password_file), "--name", "coder_kube_context", "prod-eu-west"],
        capture_output=True, text=True, check=True,
    ).stdout
    inventory = copy_inventory(tmp_path)
    host = inventory / "host_vars" / "eu-west.yml"
    host.write_text(host.read_text().replace("coder_kube_context: prod-eu-west\n", "")
                    + encrypted)
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        "error: host_vars/eu-west.yml: eu-west: coder_kube_context: expected a plain value "
        "(only secret references may be !vault values; Helm values reach secrets through "
        "Kubernetes Secrets), found a !vault value"
    ]
