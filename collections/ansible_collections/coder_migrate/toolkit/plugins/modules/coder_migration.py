#!/usr/bin/python
"""Ansible module: run the Coder v1.20 -> v1.21 migration for one inventory host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: coder_migration
short_description: Migrate one region from Coder v1.20 workspace providers to v1.21 satellites
description:
  - Plans and applies the v1.20-to-v1.21 migration of one region of a coder-migrate inventory,
    with the same engine as C(coder-migrate migrate apply --limit REGION) - the satellite in its
    own namespace, its registration, Networking v2 for the region's workspace providers, the
    rebuild of its test workspace, its GeoDNS records and their check, and the old
    workspace-provider release recorded as retained (never uninstalled).
  - With I(region) the primary's host name (the host of group C(coder_primary), whatever it is
    called) it writes the shared and primary DNS names and checks every region's answers; it
    refuses while a region still has migration steps, so run it after the regions.
  - A preflight of the region runs first; when it finds a problem nothing is changed.
  - In check mode the plan is computed and reported, and nothing is changed.
  - C(changed) is true only when the plan was not empty.
  - The engine takes the apply lock (a Lease in the primary cluster); regions migrated at once
    wait for it in turn, up to I(lock_wait) seconds.
  - Session tokens and DNS keys are read by the engine from the environment variables or files the
    inventory names; they are never arguments of this module, and never part of its result.
options:
  inventory:
    description: Inventory directory (hosts.yml + group_vars/), usually C({{ inventory_dir }}).
    type: path
    required: true
  region:
    description:
      - A region name (the inventory host name), usually C({{ inventory_hostname }}), or the
        primary's host name for the shared DNS names.
    type: str
    required: true
  force:
    description: Allow the deletions the plan contains (as C(coder-migrate migrate apply --force)).
    type: bool
    default: false
  lock_wait:
    description: Seconds to wait for the apply lock held by another run before failing.
    type: float
    default: 120.0
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
extends_documentation_fragment:
  - coder_migrate.toolkit.vault_passwords
author:
  - coder-migrate
"""

EXAMPLES = r"""
- name: Migrate this region to a satellite
  coder_migrate.toolkit.coder_migration:
    inventory: "{{ inventory_dir }}"
    region: "{{ inventory_hostname }}"
"""

RETURN = r"""
changes:
  description: One line per change of the region's migration plan, with its reason; no secrets.
  type: list
  elements: str
  returned: always
  sample:
    - "update workspace provider us-east on the primary: switch on Networking v2"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.coder_migrate.toolkit.plugins.module_utils.engine import (
    SITE_ARGUMENTS,
    run_for_site,
)

ARGUMENT_SPEC = {**SITE_ARGUMENTS, "region": {"type": "str", "required": True}}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    run_for_site(module, "coder_migrate.migrations.site", "migrate_site", "region")


if __name__ == "__main__":
    main()
