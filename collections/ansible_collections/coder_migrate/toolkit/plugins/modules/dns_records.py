#!/usr/bin/python
"""Ansible module: plan and apply an inventory's GeoDNS records with the coder-migrate engine."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dns_records
short_description: Plan and apply the GeoDNS records of a coder-migrate inventory
description:
  - Runs the same plan and apply runner as the C(coder-migrate) CLI for the zone, provider and
    shared hostname in the inventory's C(coder_dns), that is each site's hostname and wildcard,
    the shared hostname (geo-routed: a PowerDNS LUA record or Route 53 geolocation record sets
    answering the nearest healthy region, or a plain record set on providers without geo
    routing; not geo-routed: the primary's addresses) and the ownership markers.
  - Applying takes the apply lock (a Lease in the primary cluster), waiting up to I(lock_wait)
    seconds, and journals every rrset it writes, as C(coder-migrate apply) does; then, as apply's
    DNS wave does, it verifies the answers (O(verify)).
  - Records without a coder-migrate ownership marker are never changed or deleted.
  - The provider's secret (PowerDNS API key, TSIG secret) is read from the environment variable or
    file the inventory names; it is never a module argument and never returned.
  - In check mode only the plan is made; C(changed) says whether it is not empty. With C(--diff)
    the before and after of each changed rrset are shown as zone-file lines.
options:
  inventory:
    description: Inventory directory (hosts.yml + group_vars/).
    type: path
    required: true
  force:
    description:
      - Apply changes the plan marks as needing C(--force) (updating or deleting more than 30% of
        the owned rrsets, or touching NS or SOA).
    type: bool
    default: false
  verify:
    description:
      - Verify the answers after applying (see O(verify_timeout)).
    type: bool
    default: true
  verify_timeout:
    description:
      - After applying, warm every region's health check and wait up to this many seconds until
        the authoritative answers from each region's test subnets equal the plan (the verify
        step of C(coder-migrate apply)); the task fails naming each region still wrong.
      - C(0) asks once and does not wait. Nothing is verified in check mode or when nothing
        changed.
    type: float
    default: 60
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
- name: Plan and apply the GeoDNS records
  coder_migrate.toolkit.dns_records:
    inventory: "{{ ansible_inventory_sources | first }}"
  register: result
"""

RETURN = r"""
zone:
  description: The zone the records live in.
  type: str
  returned: always
provider:
  description: The DNS provider (powerdns, rfc2136, route53, zonefile).
  type: str
  returned: always
changes:
  description: Every change of the plan that acts (create, update, delete), in apply order.
  type: list
  elements: dict
  returned: always
kept:
  description: rrsets the plan considered and left as they are, with the reason.
  type: list
  elements: dict
  returned: always
applied:
  description: Ids of the changes that acted (empty in check mode and when nothing changed).
  type: list
  elements: str
  returned: always
verified:
  description:
    - What the verify step found after applying, for example "every region answers as planned
      (9 answers, 1.2 s)", or why nothing was verified; empty when nothing was applied.
  type: str
  returned: always
notes:
  description:
    - What the reader must know about the plan, for example that geo routing is not available.
  type: list
  elements: str
  returned: always
"""

import importlib
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.coder_migrate.toolkit.plugins.module_utils.engine import (
    VAULT_ARGUMENTS,
    engine_missing,
    hide_resolved_secrets,
    one_line,
    use_vault_passwords,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **VAULT_ARGUMENTS,
            "inventory": {"type": "path", "required": True},
            "force": {"type": "bool", "default": False},
            "verify": {"type": "bool", "default": True},
            "verify_timeout": {"type": "float", "default": 60.0},
            "lock_wait": {"type": "float", "default": 120.0},
        },
        supports_check_mode=True,
    )
    try:
        errors = importlib.import_module("coder_migrate.errors")
        site = importlib.import_module("coder_migrate.engine.site")
    except ImportError as error:
        module.fail_json(msg=engine_missing(error))
        return
    params = module.params
    use_vault_passwords(module)
    try:
        outcome = site.converge_dns(
            Path(params["inventory"]), check=module.check_mode, force=params["force"],
            lock_wait=params["lock_wait"],
            verify_timeout=params["verify_timeout"] if params["verify"] else None,
        )
    except errors.CoderMigrateError as error:
        hide_resolved_secrets(module)
        module.fail_json(msg=one_line(str(error)))
        return
    hide_resolved_secrets(module)
    module.exit_json(**outcome.module_result(check=module.check_mode, want_diff=module._diff))


if __name__ == "__main__":
    main()
