"""``!vault`` values of the inventory, decrypted by ``ansible-vault`` when one is used.

``ansible-inventory --list`` passes an encrypted value on as ``{"__ansible_vault": TEXT}``
without decrypting it, so reading and validating an inventory needs no vault password. A
secret reference that is such a value is decrypted only when the secret is resolved, by the
``ansible-vault`` of this interpreter with Ansible's usual password options: whatever
``ANSIBLE_VAULT_PASSWORD_FILE``, ``ANSIBLE_VAULT_IDENTITY_LIST`` and ``ansible.cfg`` say,
or what the CLI's ``--vault-password-file`` / ``--vault-id`` set (:func:`configure`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from coder_migrate.errors import SecretError
from coder_migrate.sensitive import register

__all__ = ["VAULT_KEY", "configure", "decrypt"]

VAULT_KEY = "__ansible_vault"
"""How ``ansible-inventory --list`` writes an encrypted value."""

_options: dict[str, str] = {}
_decrypted: dict[str, str] = {}


def configure(password_files: tuple[Path, ...] = (), vault_ids: tuple[str, ...] = ()) -> None:
    """Use these password files and vault ids (``label@source``) besides Ansible's own
    configuration; the CLI calls this once per command with its options."""
    _options.clear()
    identities = [*vault_ids, *(str(path.expanduser().resolve()) for path in password_files)]
    if identities:
        inherited = os.environ.get("ANSIBLE_VAULT_IDENTITY_LIST", "")
        _options["ANSIBLE_VAULT_IDENTITY_LIST"] = ",".join(
            [*filter(None, inherited.split(",")), *identities]
        )


def decrypt(ciphertext: str, what: str) -> str:
    """The plain text of a ``!vault`` value (registered as a secret); *what* names it in
    errors, which never carry the value."""
    if ciphertext in _decrypted:
        return _decrypted[ciphertext]
    executable = Path(sys.executable).parent / "ansible-vault"
    command = [str(executable) if executable.is_file() else "ansible-vault"]
    with tempfile.NamedTemporaryFile("w", suffix=".vault", encoding="utf-8") as encrypted:
        encrypted.write(ciphertext.strip() + "\n")
        encrypted.flush()
        try:
            result = subprocess.run(
                [*command, "decrypt", "--output", "-", encrypted.name],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
                env={**os.environ, **_options, "ANSIBLE_NOCOLOR": "1"}, timeout=120,
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
