"""The Coder v1.20 -> v1.21 migration: envproxy workspace providers -> satellites.

Per region (design.md, "The migration"), after a preflight of every region in scope:

1. preflight (all problems listed at once, nothing changed when there is one);
2. deploy the satellite in its own namespace and 3. register it: the deploy's changes
   (:func:`coder_migrate.engine.deploy.deploy_waves`), kept for the regions only (the primary
   is upgraded to 1.21 before the migration and is not changed by it);
4. ``ProviderNetworkingV2`` (:mod:`.networking_v2`): one change per workspace provider whose
   ``enable_net_v2`` is off;
5. ``WorkspaceRebuild`` (:mod:`.rebuild`): the region's test workspace is rebuilt, waited
   for, and reached through the satellite; planned when this plan switches one of the
   region's providers, or until the journal holds a finished rebuild of it;
6. DNS: the region's own rrsets (``DnsRRSet``) point at the satellite, then ``DnsCheck``
   (:mod:`.dns_check`) asks the authoritative servers as the region's clients would. The
   shared and primary names (the primary's site) follow in a final ``dns`` wave, closed by a
   ``DnsCheck`` of every region in scope;
7. ``RetainRelease`` (:mod:`.retain`): the old ``coder/workspace-provider`` release must
   still be deployed; it is recorded as retained for rollback. Nothing uninstalls it.

The jobs, one module each: :mod:`.observe` (what is there), :mod:`.preflight` (whether it may
start), :mod:`.plan` (the waves: the deploy's canary grouping, then ``dns``), :mod:`.rollback`
(undo from the journal, through each kind's ``inverse``) and :mod:`.status` (where each
region is). Modules here may import ``engine``, ``dns``, ``inventory``, ``providers`` and
``errors``; this ``__init__`` imports nothing, so a step's module can be imported alone.
"""

from __future__ import annotations

__all__ = ["MIGRATION", "ROLLBACK"]

MIGRATION = "v1.20-to-v1.21"
ROLLBACK = f"{MIGRATION}-rollback"
