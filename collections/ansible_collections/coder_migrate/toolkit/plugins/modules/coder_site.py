#!/usr/bin/python
"""Ansible module: converge one site (the primary or one region) with the coder-migrate engine."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: coder_site
short_description: Converge the Coder primary or one region with the coder-migrate engine
description:
  - Plans and applies the changes one site of a coder-migrate inventory needs, with the same engine
    as C(coder-migrate plan) and C(coder-migrate apply --limit SITE). For the primary that is the
    Coder Helm release; for a Coder v1 region the satellite release and its registration with the
    primary; for a Coder v2 region the workspace proxy, its token Secret and its Helm release.
  - In check mode the plan is computed and reported, and nothing is changed.
  - C(changed) is true only when the site's plan was not empty.
  - The engine takes the apply lock (a Lease in the primary cluster); several sites converged at
    once wait for it in turn, up to I(lock_wait) seconds.
  - Session tokens and DNS keys are read by the engine from the environment variables or files the
    inventory names; they are never arguments of this module, and never part of its result.
options:
  inventory:
    description: Inventory directory (hosts.yml + group_vars/), usually C({{ inventory_dir }}).
    type: path
    required: true
  site:
    description:
      - The primary's or a region's inventory host name, usually C({{ inventory_hostname }}).
    type: str
    required: true
  force:
    description: Allow the deletions the plan contains (as C(coder-migrate apply --force)).
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
- name: Converge this region's satellite
  coder_migrate.toolkit.coder_site:
    inventory: "{{ inventory_dir }}"
    site: "{{ inventory_hostname }}"
"""

RETURN = r"""
changes:
  description: One line per change of the site's plan, with its reason; no secrets.
  type: list
  elements: str
  returned: always
  sample:
    - "create helm release coder-satellite in ns coder-satellite: not installed"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.coder_migrate.toolkit.plugins.module_utils.engine import (
    SITE_ARGUMENTS,
    run_for_site,
)

ARGUMENT_SPEC = {**SITE_ARGUMENTS, "site": {"type": "str", "required": True}}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    run_for_site(module, "coder_migrate.engine.site", "converge_site", "site")


if __name__ == "__main__":
    main()
