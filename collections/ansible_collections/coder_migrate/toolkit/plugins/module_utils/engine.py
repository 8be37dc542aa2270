"""What the collection's modules share: importing the coder_migrate engine and running it
for one site.

The modules run the engine in the interpreter Ansible starts for them; when that is not the
one coder-migrate is installed in, the task fails with one line saying what to set.
"""

import base64
import importlib
import sys
from pathlib import Path
from typing import Any

__all__ = ["SITE_ARGUMENTS", "VAULT_ARGUMENTS", "engine_missing", "hide_resolved_secrets",
           "one_line", "run_for_site", "use_vault_passwords"]

VAULT_ARGUMENTS: dict[str, Any] = {
    "vault_passwords": {"type": "list", "elements": "dict", "default": [], "no_log": True},
}
"""Set by the collection's action plugin (never by a task): the playbook's vault passwords."""

SITE_ARGUMENTS: dict[str, Any] = {
    **VAULT_ARGUMENTS,
    "inventory": {"type": "path", "required": True},
    "force": {"type": "bool", "default": False},
    "lock_wait": {"type": "float", "default": 120.0},
}
"""The arguments of a module that runs the engine for one site (plus the site's own)."""


def engine_missing(error: ImportError) -> str:
    """The failure message when ``coder_migrate`` cannot be imported."""
    return (
        f"coder_migrate cannot be imported by {sys.executable} ({error}): set "
        "ansible_python_interpreter to the interpreter coder-migrate is installed in"
    )


def hide_resolved_secrets(module: Any) -> None:
    """Mask every secret the engine resolved in this module's result, wherever it shows up
    (Ansible's own ``no_log_values``: it prints them as ********)."""
    try:
        sensitive = importlib.import_module("coder_migrate.sensitive")
    except ImportError:
        return
    module.no_log_values.update(sensitive.registered())


def use_vault_passwords(module: Any) -> None:
    """Let the engine decrypt ``!vault`` values with the playbook's own vault passwords."""
    passwords = module.params.get("vault_passwords") or []
    if passwords:
        vault = importlib.import_module("coder_migrate.inventory.vault")
        vault.use_passwords(
            [(entry["id"], base64.b64decode(entry["password"])) for entry in passwords]
        )


def one_line(message: str) -> str:
    """An engine error may list one problem a line; Ansible shows msg best as one line."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def run_for_site(module: Any, engine_module: str, function: str, site_argument: str,
                 extra: dict[str, Any] | None = None) -> None:
    """Run ``engine_module.function(inventory, site, check=, force=, lock_wait=, **extra)`` and
    end the module with its ``SiteOutcome`` (``changed``, ``changes``, the plan as diff)."""
    try:
        errors = importlib.import_module("coder_migrate.errors")
        run = getattr(importlib.import_module(engine_module), function)
    except ImportError as error:
        module.fail_json(msg=engine_missing(error))
        return
    params = module.params
    use_vault_passwords(module)
    try:
        outcome = run(
            Path(params["inventory"]),
            params[site_argument],
            check=module.check_mode,
            force=params["force"],
            lock_wait=params["lock_wait"],
            **(extra or {}),
        )
    except errors.CoderMigrateError as error:
        # Fit for the user: the error tree redacts its messages when they are made.
        hide_resolved_secrets(module)
        module.fail_json(msg=one_line(str(error)))
        return
    hide_resolved_secrets(module)
    module.exit_json(**outcome.module_result(want_diff=module._diff))
