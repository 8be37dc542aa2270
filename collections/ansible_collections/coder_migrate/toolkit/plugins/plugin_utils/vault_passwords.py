"""The action plugin of the collection's engine modules: runs the module with the vault
passwords the playbook was given.

A ``!vault`` value of the inventory is decrypted by the module when the secret is used, but a
module cannot see ``ansible-playbook``'s own ``--vault-password-file``, ``--vault-id`` or
``--ask-vault-pass``: they live in the controller's loader. This plugin passes them on as a
``no_log`` argument (base64, by vault id), so a playbook that can read its inventory's vault
values can also run the engine on them.
"""

import base64
from typing import Any

from ansible.plugins.action import ActionBase

__all__ = ["ActionModule", "playbook_vault_passwords"]


def playbook_vault_passwords(loader: Any) -> list[dict[str, str]]:
    """The vault passwords the controller's loader holds, by vault id."""
    # DataLoader keeps them on its VaultLib; Ansible's own action plugins read them there too.
    vault = getattr(loader, "_vault", None)
    secrets = getattr(vault, "secrets", None) or []
    return [
        {"id": vault_id, "password": base64.b64encode(secret.bytes).decode("ascii")}
        for vault_id, secret in secrets
        if secret is not None and secret.bytes
    ]


class ActionModule(ActionBase):
    """Run the module of the task with the playbook's vault passwords added."""

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        arguments = dict(self._task.args)
        passwords = playbook_vault_passwords(self._loader)
        if passwords:
            arguments["vault_passwords"] = passwords
        result.update(self._execute_module(module_args=arguments, task_vars=task_vars))
        return result
