"""``ProvisionerRelease``: a v2 region's ``coder-provisioner`` release (its external
provisioner daemons), installed or upgraded with the region's replicas and tags.

Its values never hold the pre-shared key: the chart reads it from the region's Secret. They
hold the key's fingerprint as a pod annotation, read from that Secret when it acts, so a new
key (a rotation, or an external store that changed it) rolls the daemons.
"""

from __future__ import annotations

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
from coder_migrate.engine.guide import Guide
from coder_migrate.engine.kinds.release import protected_releases
from coder_migrate.engine.provisioner_status import connected_gate
from coder_migrate.engine.provisioners import (
    FINGERPRINT_ANNOTATION,
    PSK_KEY,
    fingerprint,
    provisioner_chart,
    psk_secret,
)
from coder_migrate.engine.values import render_values
from coder_migrate.engine.world import ManagedSite
from coder_migrate.errors import ApplyError
from coder_migrate.inventory import Region, Topology
from coder_migrate.providers.helm import chart_source

__all__ = ["ProvisionerReleaseChange", "ProvisionerReleaseDoc", "provisioner_values"]

TEMPLATE = "values/coder-provisioner.yaml.j2"


class ProvisionerReleaseDoc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    chart: str
    values: dict[str, Any]


def provisioner_values(topology: Topology, region: Region, key: str) -> dict[str, Any]:
    """The values of *region*'s provisioner release; *key*: the PSK's fingerprint."""
    return render_values(
        TEMPLATE, region.name, primary=topology.primary, provisioners=region.provisioners,
        secret=psk_secret(region), annotation=FINGERPRINT_ANNOTATION, key=key,
    )


class ProvisionerReleaseChange(Change):
    kind: Literal["ProvisionerRelease"] = "ProvisionerRelease"
    before: ProvisionerReleaseDoc | None = None
    after: ProvisionerReleaseDoc | None = None
    where: ManagedSite | None = None
    """An uninstall: where the region's provisioners were deployed."""
    release: str = ""
    """An uninstall: the release's name."""

    async def act(self, ctx: ApplyContext) -> str:
        engine = ctx.engine
        topology = engine.topology
        if self.action is Action.DELETE:
            return await self._uninstall(ctx)
        region = topology.region(self.region)
        provisioners = region.provisioners
        if provisioners is None:
            raise ApplyError(f"{self.region}: coder_provisioners is not set")
        helm = engine.site_helm(region)
        # Recorded before installing: a crash mid-install, or coder_provisioners dropped
        # later, still leaves a way to find and remove them.
        await engine.record_site(ManagedSite.of(topology, region))
        secret = psk_secret(region)
        psk = await engine.site_kube(region).secret_value(region.namespace, secret, PSK_KEY)
        if psk is None:
            raise ApplyError(f"{self.target}: Secret {secret} has no key {PSK_KEY} in ns "
                             f"{region.namespace}")
        await helm.recover(region.namespace, provisioners.release)
        await helm.install(
            region.namespace, provisioners.release,
            chart_source(provisioner_chart(topology, region), engine.base),
            provisioner_values(topology, region, fingerprint(psk)), wait=True,
            description=f"coder-migrate {ctx.run}",
        )
        return f"{self.target}: installed, pods read key {fingerprint(psk)}"

    async def _uninstall(self, ctx: ApplyContext) -> str:
        where = self.where
        if where is None or not self.release:
            raise ApplyError(f"{self.region}: no record of where its provisioners were deployed")
        if (where.kube_context, where.namespace, self.release) in protected_releases(
                ctx.engine.topology) or self.release == where.release:
            raise ApplyError(f"{self.target}: the region's Coder release or a workspace-provider "
                             "release kept for rollback; not uninstalled")
        removed = await ctx.engine.site_helm(where).uninstall(where.namespace, self.release)
        return f"{self.target}: {'uninstalled' if removed else 'already gone'}"

    def verify(self, ctx: ApplyContext) -> Gate | None:
        """An install or a roll waits until the primary lists the region's daemons."""
        if self.action is Action.DELETE:
            return None
        return connected_gate(ctx.engine, ctx.site(self.region))

    @classmethod
    async def inverse(cls, done: Done, ctx: UndoContext) -> Change | Irreversible | None:
        """Uninstall a release the operation installed; an upgraded one stays."""
        if done.snapshot is not None:
            return Irreversible("an upgraded provisioner release is not downgraded")
        region = ctx.engine.topology.region(done.region)
        if region.provisioners is None:
            return Irreversible("coder_provisioners is no longer set for the region")
        release = await ctx.engine.site_helm(region).release(
            region.namespace, region.provisioners.release)
        if release is None:
            return None
        return cls(
            id=done.change_id, region=done.region, action=Action.DELETE,
            target=f"helm release {region.provisioners.release} in ns {region.namespace} of "
                   f"{region.kube_context}",
            reason="uninstall the provisioners the operation installed", needs_force=True,
            where=ManagedSite.of(ctx.engine.topology, region), release=region.provisioners.release,
        )

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Install the region's external provisioners (helm upgrade --install --wait)",
            rollback="Rollback uninstalls a provisioner release the operation installed.",
        )
