"""``ProxyToken``: a v2 region's token Secret, regenerated when lost, deleted with its proxy.

A proxy whose token Secret is missing gets a new token (``regenerate_token``), never a
second proxy; a removed region's Secret is deleted after its release is uninstalled.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.engine.change import (
    Action,
    ApplyContext,
    Change,
    Gate,
)
from coder_migrate.engine.guide import Guide
from coder_migrate.engine.health import gate_unless_deleted
from coder_migrate.engine.kinds.proxy import issue_token
from coder_migrate.engine.world import ManagedSite
from coder_migrate.errors import ApplyError

__all__ = ["ProxyTokenChange", "TokenDoc"]


class TokenDoc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str
    """Always ``(sensitive)``: a plan never holds a token."""


class ProxyTokenChange(Change):
    kind: Literal["ProxyToken"] = "ProxyToken"
    IRREVERSIBLE = "a regenerated token cannot be taken back"
    before: TokenDoc | None = None
    after: TokenDoc | None = None
    where: ManagedSite | None = None
    """Where a removed region was deployed (for deleting its Secret)."""

    async def act(self, ctx: ApplyContext) -> str:
        if self.action is Action.DELETE:
            if self.where is None:
                raise ApplyError(f"{self.region}: no record of where it was deployed")
            kube = ctx.engine.site_kube(self.where)
            name = ctx.engine.token_secret.name
            deleted = await kube.delete_secret(self.where.namespace, name)
            return f"{self.target}: {'deleted' if deleted else 'already gone'}"
        region = ctx.engine.topology.region(self.region)
        async with ctx.engine.coder_v2() as coder:
            return await issue_token(ctx, coder, region, await coder.find_proxy(region.name))

    def verify(self, ctx: ApplyContext) -> Gate | None:
        return gate_unless_deleted(self, ctx)

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Store the workspace proxy's token in its Secret",
            rollback="Nothing to undo: the old token is invalid once regenerated.",
        )
