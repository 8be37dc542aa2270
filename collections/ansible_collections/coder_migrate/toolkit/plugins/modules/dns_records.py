#!/usr/bin/python
"""Ansible module: plan and apply an inventory's GeoDNS records with the coder-migrate engine."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: dns_records
short_description: Plan and apply the GeoDNS records of a coder-migrate inventory
description:
  - Runs the same engine as the C(coder-migrate) CLI (C(plan_dns) then C(apply_dns_changes)) for
    the zone, provider and shared hostname in the inventory's C(coder_dns), that is each site's
    hostname and wildcard, the shared hostname (a PowerDNS LUA record routing to the nearest healthy
    region, or a plain record set on providers without geo routing) and the ownership markers.
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
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
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
  description: The DNS provider (powerdns, rfc2136, zonefile).
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
      (9 answers)", or why nothing could be verified; empty when nothing was applied.
  type: str
  returned: always
notes:
  description:
    - What the reader must know about the plan, for example that geo routing is not available.
  type: list
  elements: str
  returned: always
"""

import asyncio
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.coder_migrate.toolkit.plugins.module_utils.engine import engine_missing


def _lines(snapshot: dict[str, Any] | None) -> str:
    if not snapshot:
        return ""
    name, rtype, ttl = snapshot["name"], snapshot["type"], snapshot["ttl"]
    return "".join(f"{name}. {ttl} {rtype} {content}\n" for content in snapshot["records"])


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "inventory": {"type": "path", "required": True},
            "force": {"type": "bool", "default": False},
            "verify": {"type": "bool", "default": True},
            "verify_timeout": {"type": "float", "default": 60.0},
        },
        supports_check_mode=True,
    )
    try:
        from coder_migrate.dns import apply_dns_changes, open_adapter, plan_dns
        from coder_migrate.dns.plan import DnsPlan
        from coder_migrate.dns.verify import raise_unless_verified
        from coder_migrate.engine.plan import Action
        from coder_migrate.errors import CoderMigrateError
        from coder_migrate.inventory import load_topology
    except ImportError as error:
        module.fail_json(msg=engine_missing(error))
        return

    async def run() -> tuple[DnsPlan, list[str], str]:
        topology = load_topology(module.params["inventory"])
        async with open_adapter(topology) as adapter:
            plan = await plan_dns(topology, adapter)
            plan.raise_if_unsafe(force=module.params["force"])
            if module.check_mode or plan.is_empty:
                return plan, [], ""
            applied = await apply_dns_changes(adapter, plan.changes)
        if not module.params["verify"]:
            return plan, applied, "answers not verified: verify is false"
        outcome = await raise_unless_verified(
            topology, {c.region for c in plan.effective}, timeout=module.params["verify_timeout"]
        )
        verified = (f"answers not verified: {outcome.skipped}" if outcome.skipped else
                    f"every region answers as planned ({outcome.answers} answers)")
        return plan, applied, verified

    try:
        plan, applied, verified = asyncio.run(run())
    except CoderMigrateError as error:
        module.fail_json(msg=str(error))
        return

    module.exit_json(**_result(plan, applied, verified, check_mode=module.check_mode,
                               diff=module._diff, action=Action))


def _result(plan: Any, applied: list[str], verified: str, *, check_mode: bool, diff: bool,
            action: Any) -> dict[str, Any]:
    effective = plan.effective
    result: dict[str, Any] = {
        "changed": bool(effective) if check_mode else bool(applied),
        "zone": plan.zone,
        "provider": plan.provider,
        "changes": [
            {"id": c.id, "action": c.action.value, "target": c.target, "reason": c.reason}
            for c in effective
        ],
        "kept": [
            {"target": c.target, "reason": c.reason}
            for c in plan.changes if c.action is action.KEEP
        ],
        "applied": applied,
        "verified": verified,
        "notes": list(plan.notes),
    }
    if diff:
        shown = effective if check_mode else [c for c in effective if c.id in applied]
        result["diff"] = [
            {
                "before_header": f"{c.target} (observed)",
                "after_header": f"{c.target} (planned)",
                "before": _lines(c.before),
                "after": _lines(c.after),
            }
            for c in shown
        ]
    return result


if __name__ == "__main__":
    main()
