"""``SiteRecord``: a removed region forgotten in the sites record (``coder-migrate-sites``).

The record says where coder-migrate deployed each region, so a region taken out of the
inventory can still be found and removed. It is forgotten last, once everything of the
region is gone: an interrupted removal is planned again from the record.
"""

from __future__ import annotations

from typing import Literal

from coder_migrate.engine.change import (
    Action,
    ApplyContext,
    Change,
    change_id,
)
from coder_migrate.engine.guide import Guide
from coder_migrate.engine.world import SITES_CONFIG_MAP, ManagedSite

__all__ = ["SiteRecordChange"]


class SiteRecordChange(Change):
    kind: Literal["SiteRecord"] = "SiteRecord"
    IRREVERSIBLE = "a removed region is deployed again by putting it back in the inventory"
    before: ManagedSite | None = None

    @classmethod
    def forget(cls, site: ManagedSite, *, depends_on: tuple[str, ...]) -> SiteRecordChange:
        return cls(
            id=change_id(site.name, "SiteRecord", site.name), region=site.name,
            action=Action.DELETE, target=f"{site.name} in ConfigMap {SITES_CONFIG_MAP}",
            reason="forget where the region was deployed, once it is removed",
            needs_force=True, before=site, depends_on=depends_on,
        )

    async def act(self, ctx: ApplyContext) -> str:
        await ctx.engine.record_site(None, remove=self.region)
        return f"{self.target}: forgotten"

    @classmethod
    def guide(cls) -> Guide:
        return Guide(title="Forget the removed region",
                     rollback="Nothing to undo: put the region back in the inventory to deploy "
                              "it again.")
