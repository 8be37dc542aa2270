"""``WorkspaceProxy``: a v2 region's workspace proxy on the primary, created, renamed or
deleted.

A new proxy's one-time token goes straight into the region's token Secret (never into a
plan, a log or the journal) and the proxy's running pods are restarted to read it.
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
from coder_migrate.inventory import Region
from coder_migrate.providers.coder import CoderV2Client
from coder_migrate.providers.coder import WorkspaceProxy as CoderProxy

__all__ = ["ProxyDoc", "WorkspaceProxyChange", "issue_token", "store_proxy_token"]


class ProxyDoc(BaseModel):
    """A workspace proxy as a plan shows it (the token only ever as ``(sensitive)``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    display_name: str | None = None
    icon: str | None = None
    token: str | None = None
    token_secret: str | None = None


class WorkspaceProxyChange(Change):
    kind: Literal["WorkspaceProxy"] = "WorkspaceProxy"
    IRREVERSIBLE = ("a workspace proxy is removed by taking its region out of the inventory "
                    "and applying with --force")
    before: ProxyDoc | None = None
    after: ProxyDoc | None = None

    async def act(self, ctx: ApplyContext) -> str:
        async with ctx.engine.coder_v2() as coder:
            existing = await coder.find_proxy(self.region)
            if self.action is Action.DELETE:
                if existing is None:
                    return f"workspace proxy {self.region}: already deleted"
                await coder.delete_proxy(existing.id)
                return f"workspace proxy {self.region}: deleted"
            region = ctx.engine.topology.region(self.region)
            if self.action is Action.UPDATE:
                await coder.update_proxy(existing.id if existing else region.name,
                                         display_name=region.display_name, icon=region.icon)
                return f"workspace proxy {region.name}: display name and icon set"
            return await issue_token(ctx, coder, region, existing)

    def verify(self, ctx: ApplyContext) -> Gate | None:
        return gate_unless_deleted(self, ctx)

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Create the workspace proxy on the primary",
            rollback="Taking the region out of the inventory and `apply --force` deletes the "
                     "proxy after uninstalling its release.",
        )


async def issue_token(
    ctx: ApplyContext, coder: CoderV2Client, region: Region, existing: CoderProxy | None
) -> str:
    """Create the proxy, or regenerate the token of one whose token was never stored (a
    proxy of an interrupted run: never a second proxy); store the token in its Secret."""
    if existing is None:
        created = await coder.create_proxy(region.name, display_name=region.display_name,
                                           icon=region.icon)
        what = "created"
    else:
        # Real Coder's PATCH requires the display name and icon along with the token flag.
        created = await coder.regenerate_proxy_token(
            existing.id, display_name=region.display_name, icon=region.icon)
        what = "token regenerated"
    token = created.proxy_token.get_secret_value()
    return f"workspace proxy {region.name}: {what}, " + await store_proxy_token(
        ctx, region, token)


async def store_proxy_token(ctx: ApplyContext, region: Region, token: str) -> str:
    """Write *token* into the region's token Secret and roll the proxy's pods to read it."""
    token_secret = ctx.engine.token_secret
    kube = ctx.engine.site_kube(region)
    await kube.put_secret(
        region.namespace, token_secret.name, {token_secret.key: token},
        annotations={"coder-migrate/proxy": region.name},
    )
    # Running proxy pods read the token at start: roll them so the new one is used.
    restarted = await kube.restart_deployments(
        region.namespace, f"app.kubernetes.io/instance={region.release}"
    )
    rolled = f"; restarted {', '.join(restarted)}" if restarted else ""
    return f"token stored in Secret {token_secret.name}{rolled}"
