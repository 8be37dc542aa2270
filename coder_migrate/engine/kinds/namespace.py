"""``Namespace``: the namespace a site's release lives in, created when missing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.engine.change import (
    Action,
    ApplyContext,
    Change,
    change_id,
)
from coder_migrate.engine.guide import Check, Commands, Guide, fixed
from coder_migrate.inventory import Primary, Region

__all__ = ["NamespaceChange", "NamespaceSpec"]


class NamespaceSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    context: str
    namespace: str


class NamespaceChange(Change):
    kind: Literal["Namespace"] = "Namespace"
    IRREVERSIBLE = "a namespace is left in place (empty once its release is gone)"
    after: NamespaceSpec | None = None

    @classmethod
    def create(cls, site: Primary | Region) -> NamespaceChange:
        return cls(
            id=change_id(site.name, "Namespace", site.namespace), region=site.name,
            action=Action.CREATE, target=f"namespace {site.namespace} in {site.kube_context}",
            reason="it does not exist",
            after=NamespaceSpec(context=site.kube_context, namespace=site.namespace),
        )

    async def act(self, ctx: ApplyContext) -> str:
        site = ctx.site(self.region)
        created = await ctx.engine.site_kube(site).ensure_namespace(site.namespace)
        return f"namespace {site.namespace} {'created' if created else 'already there'}"

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Create the satellite's namespace", checks=_checks,
            estimate=fixed("about 1 s (one API call)"),
            rollback="`migrate rollback` leaves the namespace in place (empty once the "
                     "satellite is uninstalled); nothing else runs in it.",
        )


def _checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    return [Check(c.kubectl(region, "get", "namespace", region.namespace),
                  f"namespace {region.namespace} with STATUS Active")]
