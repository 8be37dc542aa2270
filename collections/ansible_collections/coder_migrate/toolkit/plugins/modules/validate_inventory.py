#!/usr/bin/python
"""Ansible module: validate an inventory with the coder-migrate model (read-only)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: validate_inventory
short_description: Validate a coder-migrate inventory
description:
  - Reads the inventory through C(ansible-inventory --list) and validates it with the same model
    the C(coder-migrate) CLI uses. Never changes anything; supports check mode.
  - Returns every problem as one line naming the file (relative to the current directory when
    the inventory is under it, else to the inventory), the host or group, the key, what was
    expected and what was found, including problems no single host owns (no primary, no
    region, a misspelt group).
options:
  inventory:
    description: Inventory directory (hosts.yml + group_vars/).
    type: path
    required: true
author:
  - coder-migrate
"""

EXAMPLES = r"""
- name: Validate the inventory
  coder_migrate.toolkit.validate_inventory:
    inventory: "{{ ansible_inventory_sources | first }}"
  register: result
"""

RETURN = r"""
valid:
  description: Whether the inventory follows every rule.
  type: bool
  returned: always
problems:
  description: One entry per broken rule, with the host or group (C(all) for shared settings).
  type: list
  elements: dict
  returned: always
summary:
  description: Generation, version and region names of a valid inventory.
  type: dict
  returned: when valid
"""


from ansible.module_utils.basic import AnsibleModule
from ansible_collections.coder_migrate.toolkit.plugins.module_utils.engine import engine_missing


def main() -> None:
    module = AnsibleModule(
        argument_spec={"inventory": {"type": "path", "required": True}},
        supports_check_mode=True,
    )
    try:
        from coder_migrate.errors import CoderMigrateError, InventoryError
        from coder_migrate.inventory import load_topology
    except ImportError as error:
        module.fail_json(msg=engine_missing(error))
        return
    try:
        topology = load_topology(module.params["inventory"])
    except InventoryError as error:
        problems = [{"owner": p.owner, "line": str(p)} for p in error.problems]
        module.exit_json(changed=False, valid=False, problems=problems)
        return
    except CoderMigrateError as error:
        module.fail_json(msg=str(error))
        return
    except Exception as error:  # one line, never a module traceback, whatever the input
        module.fail_json(msg=f"unexpected {type(error).__name__}: {error}")
        return
    module.exit_json(
        changed=False,
        valid=True,
        problems=[],
        summary={
            "generation": topology.generation,
            "version": topology.version,
            "regions": [region.name for region in topology.regions],
        },
    )


if __name__ == "__main__":
    main()
