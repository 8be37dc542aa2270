"""``HelmRelease``: a site's Coder release installed, upgraded or (region removed) uninstalled.

An install or upgrade recovers a release left ``pending-*`` by a killed helm run first, and
records the region in the sites record before installing, so a crash mid-install still
leaves a way to find and remove it. Old workspace-provider releases are never uninstalled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.engine.change import (
    Action,
    ApplyContext,
    Change,
    Done,
    Gate,
    Irreversible,
    UndoContext,
)
from coder_migrate.engine.guide import Check, Commands, Guide, fixed
from coder_migrate.engine.health import gate_unless_deleted
from coder_migrate.engine.values import release_values
from coder_migrate.engine.world import ManagedSite
from coder_migrate.errors import ApplyError
from coder_migrate.inventory import Region, Topology
from coder_migrate.providers.helm import chart_source

__all__ = ["HelmReleaseChange", "ReleaseDoc", "protected_releases"]


class ReleaseDoc(BaseModel):
    """A release as a plan shows it: its chart and its values (sensitive ones masked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chart: str
    values: dict[str, Any]


def protected_releases(topology: Topology) -> set[tuple[str, str, str]]:
    """(kube context, namespace, release) of every old workspace-provider release: never
    uninstalled by any code path."""
    return {
        (region.kube_context, provider.namespace, provider.release)
        for region in topology.regions
        for provider in region.workspace_providers
    }


#: Seconds a rollback leaves the satellite serving after its region's provider went back to
#: the envproxy path, before uninstalling it: users' pages and agents take the new address on
#: their next look at the primary, and a request sent to the satellite meanwhile must still be
#: answered (the lab's synthetic users look every second).
USERS_DRAIN_SECONDS = 5.0


class HelmReleaseChange(Change):
    kind: Literal["HelmRelease"] = "HelmRelease"
    before: ReleaseDoc | ManagedSite | None = None
    """The release as observed; for an uninstall, where it was deployed."""
    after: ReleaseDoc | None = None
    drain_seconds: float = 0.0
    """An uninstall: how long the release keeps serving first (users moving off it)."""

    async def act(self, ctx: ApplyContext) -> str:
        if self.action is Action.DELETE:
            return await self._uninstall(ctx)
        engine = ctx.engine
        site = ctx.site(self.region)
        if isinstance(site, Region):
            # Recorded before installing: a crash mid-install still leaves a way to remove it.
            await engine.record_site(ManagedSite.of(engine.topology, site))
        helm = engine.site_helm(site)
        await helm.recover(site.namespace, site.release)
        source = chart_source(engine.topology.chart_for(site), engine.base)
        values = release_values(engine.topology, site, token_secret=engine.token_secret)
        await helm.install(
            site.namespace, site.release, source, values, wait=True,
            description=f"coder-migrate {ctx.run}",
        )
        return f"{self.target}: installed"

    async def _uninstall(self, ctx: ApplyContext) -> str:
        managed = self.before
        if not isinstance(managed, ManagedSite):
            raise ApplyError(f"{self.region}: no record of where it was deployed")
        where = (managed.kube_context, managed.namespace, managed.release)
        if where in protected_releases(ctx.engine.topology):
            raise ApplyError(
                f"{self.target}: a workspace-provider release kept for rollback; not uninstalled"
            )
        if self.drain_seconds:
            await asyncio.sleep(self.drain_seconds)
        removed = await ctx.engine.site_helm(managed).uninstall(managed.namespace, managed.release)
        return f"{self.target}: {'uninstalled' if removed else 'already gone'}"

    def verify(self, ctx: ApplyContext) -> Gate | None:
        return gate_unless_deleted(self, ctx)

    @classmethod
    async def inverse(cls, done: Done, ctx: UndoContext) -> Change | Irreversible | None:
        """Uninstall a release the operation installed (found nothing before it); an
        upgraded release keeps its values (its previous ones are not kept)."""
        if done.snapshot is not None:
            return Irreversible("an upgraded release is not downgraded")
        topology = ctx.engine.topology
        region = topology.region(done.region)
        release = await ctx.engine.site_helm(region).release(region.namespace, region.release)
        if release is None:
            return None
        return cls(
            id=done.change_id, region=done.region, action=Action.DELETE,
            target=f"helm release {region.release} in ns {region.namespace} of "
                   f"{region.kube_context}",
            reason=f"uninstall the satellite the migration installed, {USERS_DRAIN_SECONDS:.0f} s "
                   "after its users went back to the envproxy (the old workspace-provider "
                   "release stays)", needs_force=True,
            before=ManagedSite.of(topology, region), drain_seconds=USERS_DRAIN_SECONDS,
        )

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Install the satellite (helm upgrade --install --wait)", checks=_checks,
            estimate=fixed(
                "about 2.5 s in the lab (median 2.35 s, docs/benchmarks.md); in production "
                "add the image pull and pod start. The health gate after the wave waits up to "
                "--gate-timeout (120 s by default)"),
            rollback="`migrate rollback` uninstalls the satellite's release; the old "
                     "workspace-provider release is never touched.",
        )


def _checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    return [
        Check(c.helm_status(region, region.release, region.namespace), "STATUS: deployed"),
        Check(c.kubectl(region, "get", "pods", namespace=region.namespace),
              "every pod Running with all containers READY (e.g. 1/1)"),
    ]
