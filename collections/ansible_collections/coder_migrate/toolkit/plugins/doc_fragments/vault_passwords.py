"""The ``vault_passwords`` option the collection's action plugins set on the engine modules."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  vault_passwords:
    description:
      - Set by the collection's action plugin, not by a task; the vault passwords the playbook
        was given (C(--vault-password-file), C(--vault-id), C(--ask-vault-pass)), by vault id,
        so C(!vault) values of the inventory decrypt. Never logged or returned.
    type: list
    elements: dict
    default: []
"""
