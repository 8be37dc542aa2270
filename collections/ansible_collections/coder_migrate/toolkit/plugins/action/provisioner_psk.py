"""Runs the provisioner_psk module with the playbook's vault passwords (see
plugin_utils/vault_passwords.py)."""

from ansible_collections.coder_migrate.toolkit.plugins.plugin_utils.vault_passwords import (
    ActionModule,
)

__all__ = ["ActionModule"]
