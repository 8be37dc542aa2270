#!/usr/bin/python
"""Ansible module: rotate the external provisioners' pre-shared key with the coder-migrate
engine, or finish a rotation that was interrupted."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: provisioner_psk
short_description: Rotate the Coder v2 provisioners' pre-shared key with the coder-migrate engine
description:
  - With I(rotate), a new key in waves, as C(coder-migrate rotate provisioner-psk) (staged on the
    primary, taken by the primary, copied to every region whose provisioners roll, the staged
    copy dropped). Without, a rotation that was interrupted (the staged key still there) is
    finished, and nothing is done when none is under way.
  - Runs for the primary's inventory host. In check mode the plan is computed and reported.
  - The key never passes through Ansible; the result carries fingerprints only.
options:
  inventory:
    description: Inventory directory (hosts.yml + group_vars/), usually C({{ inventory_dir }}).
    type: path
    required: true
  site:
    description: The primary's inventory host name, usually C({{ inventory_hostname }}).
    type: str
    required: true
  rotate:
    description: Make a new key (else only finish an interrupted rotation).
    type: bool
    default: false
  force:
    description: Unused by a rotation (it deletes nothing that needs it); kept for symmetry.
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
- name: Rotate the provisioners' key
  coder_migrate.toolkit.provisioner_psk:
    inventory: "{{ inventory_dir }}"
    site: "{{ inventory_hostname }}"
    rotate: true
"""

RETURN = r"""
changes:
  description: One line per change of the rotation's plan, with fingerprints, never a key.
  type: list
  elements: str
  returned: always
"""


from ansible.module_utils.basic import AnsibleModule
from ansible_collections.coder_migrate.toolkit.plugins.module_utils.engine import (
    SITE_ARGUMENTS,
    run_for_site,
)

ARGUMENT_SPEC = {**SITE_ARGUMENTS, "site": {"type": "str", "required": True},
                 "rotate": {"type": "bool", "default": False}}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    run_for_site(module, "coder_migrate.engine.site", "provisioner_key", "site",
                 extra={"rotate": module.params["rotate"]})


if __name__ == "__main__":
    main()
