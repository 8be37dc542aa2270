"""``DatabaseSecret``: the primary's database reference, written into a Secret of its
namespace (seed 004, "Managed database").

The value comes from ``coder_database.url`` ({env}, {file} or !vault) at apply time and goes
straight into the Secret (v2: the URL under ``url``, read as ``CODER_PG_CONNECTION_URL``;
v1: the password under ``password``, read by ``postgres.passwordSecret``). A plan holds only
``(sensitive)``; an updated value rolls the primary's pods so they read it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.engine.change import Action, ApplyContext, Change, Gate
from coder_migrate.engine.guide import Guide
from coder_migrate.engine.health import site_gate
from coder_migrate.engine.infra import DATABASE_SECRET, database_secret_data
from coder_migrate.errors import ApplyError
from coder_migrate.inventory import Primary

__all__ = ["DatabaseDoc", "DatabaseSecretChange"]


class DatabaseDoc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reference: str
    """Where the value comes from (``env NAME``, ``file PATH``), never the value."""
    value: str
    """Always ``(sensitive)``."""


class DatabaseSecretChange(Change):
    kind: Literal["DatabaseSecret"] = "DatabaseSecret"
    IRREVERSIBLE = "the previous database reference is not kept; apply the old one again"
    before: DatabaseDoc | None = None
    after: DatabaseDoc | None = None

    async def act(self, ctx: ApplyContext) -> str:
        site = ctx.site(self.region)
        if not isinstance(site, Primary) or site.database is None:
            raise ApplyError(f"{self.region}: coder_database is not set on the primary")
        kube = ctx.engine.site_kube(site)
        await kube.put_secret(site.namespace, DATABASE_SECRET,
                              database_secret_data(ctx.engine.topology, site),
                              annotations={"coder-migrate/database": site.database.url.describe()})
        if self.action is Action.CREATE:
            return f"{self.target}: written from {site.database.url.describe()}"
        restarted = await kube.restart_deployments(
            site.namespace, f"app.kubernetes.io/instance={site.release}")
        restarted += await kube.restart_deployments(site.namespace, "coder.deployment=coderd")
        rolled = f"; restarted {', '.join(restarted)}" if restarted else ""
        return f"{self.target}: updated from {site.database.url.describe()}{rolled}"

    def verify(self, ctx: ApplyContext) -> Gate | None:
        if self.action is Action.UPDATE:
            return site_gate(ctx.engine, ctx.site(self.region))
        return None  # a new Secret is read by the release installed after it

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Store the primary's database reference in its Secret",
            rollback="Apply the previous coder_database reference again.",
        )
