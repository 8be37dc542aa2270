"""``!vault`` values of the inventory, decrypted by ``ansible-vault`` when one is used.

``ansible-inventory --list`` passes an encrypted value on as ``{"__ansible_vault": TEXT}``
without decrypting it, so reading and validating an inventory needs no vault password. A
secret reference that is such a value is decrypted only when the secret is resolved, by the
``ansible-vault`` of this interpreter with Ansible's usual password options: whatever
``ANSIBLE_VAULT_PASSWORD_FILE``, ``ANSIBLE_VAULT_IDENTITY_LIST`` and ``ansible.cfg`` say,
or what the CLI's ``--vault-password-file`` / ``--vault-id`` set (:func:`configure`). Under
``ansible-playbook`` the collection's action plugins hand the roles' modules the passwords the
playbook was given (``--vault-password-file``, ``--vault-id``, ``--ask-vault-pass``), which
ansible-vault uses too (:func:`use_passwords`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from coder_migrate.errors import SecretError
from coder_migrate.sensitive import register

__all__ = ["VAULT_KEY", "configure", "decrypt", "use_passwords"]

VAULT_KEY = "__ansible_vault"
"""How ``ansible-inventory --list`` writes an encrypted value."""

_identities: dict[str, tuple[str, ...]] = {"files": (), "ids": ()}
_decrypted: dict[str, str] = {}
_passwords: list[tuple[str, bytes]] = []


def configure(
    *, password_files: tuple[Path, ...] | None = None, vault_ids: tuple[str, ...] | None = None
) -> None:
    """Use these password files and vault ids (``label@source``) besides Ansible's own
    configuration (None: leave as they are); the CLI calls this with its options."""
    if password_files is not None:
        _identities["files"] = tuple(str(p.expanduser().resolve()) for p in password_files)
    if vault_ids is not None:
        _identities["ids"] = vault_ids


def use_passwords(passwords: list[tuple[str, bytes]]) -> None:
    """Vault passwords by vault id besides the configured ones: the playbook's own, which a
    module cannot read from its configuration."""
    _passwords[:] = passwords


def _environment(password_files: list[str]) -> dict[str, str]:
    environment = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    identities = [*_identities["ids"], *_identities["files"], *password_files]
    if identities:
        inherited = environment.get("ANSIBLE_VAULT_IDENTITY_LIST", "")
        environment["ANSIBLE_VAULT_IDENTITY_LIST"] = ",".join(
            [*filter(None, inherited.split(",")), *identities]
        )
    return environment


def _write_passwords(directory: Path) -> list[str]:
    """:func:`use_passwords`' passwords as ``id@file`` identities, one 0600 file each (never
    executable: ansible-vault would run it as a script)."""
    identities = []
    for index, (vault_id, password) in enumerate(_passwords):
        path = directory / f"password-{index}"
        path.touch(mode=0o600)
        path.write_bytes(password)
        identities.append(f"{vault_id}@{path}")
    return identities


def decrypt(ciphertext: str, what: str) -> str:
    """The plain text of a ``!vault`` value (registered as a secret); *what* names it in
    errors, which never carry the value."""
    if ciphertext in _decrypted:
        return _decrypted[ciphertext]
    executable = Path(sys.executable).parent / "ansible-vault"
    command = [str(executable) if executable.is_file() else "ansible-vault"]
    # A directory only this user can enter holds the value and the passwords while it runs.
    with tempfile.TemporaryDirectory(prefix="coder-migrate-vault-") as directory:
        encrypted = Path(directory) / "value.vault"
        encrypted.write_text(ciphertext.strip() + "\n", encoding="utf-8")
        environment = _environment(_write_passwords(Path(directory)))
        try:
            result = subprocess.run(
                [*command, "decrypt", "--output", "-", str(encrypted)],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
                env=environment, timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SecretError(f"{what}: ansible-vault cannot run ({error})") from None
    if result.returncode != 0:
        raise SecretError(f"{what}: ansible-vault cannot decrypt it: {_reason(result.stderr)}")
    plain = register(result.stdout.strip())
    _decrypted[ciphertext] = plain
    return plain


def _reason(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    reason = (errors or lines or ["no reason given"])[-1]
    reason = reason.removeprefix("[ERROR]: ").removeprefix("ERROR! ")
    if "no vault secrets" in reason.lower() or "EOF" in reason:
        reason += (" (give --vault-password-file or --vault-id, or set "
                   "ANSIBLE_VAULT_PASSWORD_FILE)")
    return reason
