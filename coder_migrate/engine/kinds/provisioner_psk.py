"""``ProvisionerPsk``: the deployment's provisioner pre-shared key, generated once on the
primary, copied to each region's Secret, and rotated (staged, promoted, dropped).

The key goes from ``secrets`` straight into Kubernetes Secrets and from one Secret to another;
a plan, a journal entry or a log line only ever holds its fingerprint. Each step is idempotent
against what is there now, so a rotation killed mid-way resumes with the staged key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.engine.change import Action, ApplyContext, Change, Gate
from coder_migrate.engine.guide import Guide
from coder_migrate.engine.provisioner_status import connected_gate
from coder_migrate.engine.provisioners import (
    FINGERPRINT_ANNOTATION,
    MANAGED_SECRET,
    NEXT_SECRET,
    PSK_KEY,
    PSK_SECRET,
    fingerprint,
    new_psk,
    psk_secret,
)
from coder_migrate.engine.world import ManagedSite
from coder_migrate.errors import ApplyError

__all__ = ["ProvisionerPskChange", "PskDoc", "Step"]

Step = Literal["generate", "copy", "stage", "promote", "drop", "delete"]


class PskDoc(BaseModel):
    """A PSK Secret as a plan shows it: where, and the key's fingerprint (never the key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret: str
    fingerprint: str | None = None


class ProvisionerPskChange(Change):
    kind: Literal["ProvisionerPsk"] = "ProvisionerPsk"
    IRREVERSIBLE = ("a pre-shared key is never restored: `coder-migrate rotate provisioner-psk` "
                    "makes a new one")
    step: Step
    before: PskDoc | None = None
    after: PskDoc | None = None
    where: ManagedSite | None = None
    """``delete``: where the region's provisioners were deployed."""
    roll_release: str = ""
    """``copy``: the provisioner release whose pods are restarted after the copy, when no
    release change of the plan rolls them (their annotation already names the key, but pods
    started while the store held another key read that one; a pod reads it only at start)."""

    async def act(self, ctx: ApplyContext) -> str:
        engine = ctx.engine
        if self.step == "delete":
            return await self._delete(ctx)
        primary = engine.topology.primary
        kube = engine.site_kube(primary)
        namespace = primary.namespace
        if self.step in ("generate", "stage"):
            name = PSK_SECRET if self.step == "generate" else NEXT_SECRET
            existing = await kube.secret_value(namespace, name, PSK_KEY)
            if existing is not None:
                return f"{self.target}: already holds {fingerprint(existing)}"
            psk = new_psk()
            await kube.put_secret(namespace, name, {PSK_KEY: psk}, annotations=MANAGED_SECRET)
            return f"{self.target}: new key {fingerprint(psk)}"
        if self.step == "drop":
            deleted = await kube.delete_secret(namespace, NEXT_SECRET)
            return f"{self.target}: {'deleted' if deleted else 'already gone'}"
        if self.step == "promote":
            found = await kube.secret_value(namespace, NEXT_SECRET, PSK_KEY)
            if found is None:
                raise ApplyError(f"{self.target}: no staged key in Secret {NEXT_SECRET}; run "
                                 "`coder-migrate rotate provisioner-psk` again")
            staged = found
            await kube.put_secret(namespace, PSK_SECRET, {PSK_KEY: staged},
                                  annotations=MANAGED_SECRET)
            rolled = await kube.roll_deployments(
                namespace, f"app.kubernetes.io/instance={primary.release}",
                {FINGERPRINT_ANNOTATION: fingerprint(staged)})
            return (f"{self.target}: now {fingerprint(staged)}; rolled "
                    f"{', '.join(rolled) or 'no deployment'}")
        # copy: the primary's key into the region's Secret (its release rolls the pods).
        region = engine.topology.region(self.region)
        current = await kube.secret_value(namespace, PSK_SECRET, PSK_KEY)
        if current is None:
            raise ApplyError(f"{self.target}: the primary has no key in Secret {PSK_SECRET} "
                             f"of ns {namespace}")
        region_kube = engine.site_kube(region)
        await region_kube.put_secret(
            region.namespace, psk_secret(region), {PSK_KEY: current}, annotations=MANAGED_SECRET)
        if not self.roll_release:
            return f"{self.target}: holds {fingerprint(current)}"
        rolled = await region_kube.restart_deployments(
            region.namespace, f"app.kubernetes.io/instance={self.roll_release}")
        return (f"{self.target}: holds {fingerprint(current)}; restarted "
                f"{', '.join(rolled) or 'no deployment'}")

    def verify(self, ctx: ApplyContext) -> Gate | None:
        """A copy that restarted the region's provisioners waits for them, as a roll does."""
        if not self.roll_release:
            return None
        return connected_gate(ctx.engine, ctx.site(self.region))

    async def _delete(self, ctx: ApplyContext) -> str:
        """A region's copy, once its provisioners are gone; only a Secret coder-migrate wrote
        (checked again now: an external store's Secret is never deleted)."""
        if self.where is None or self.before is None:
            raise ApplyError(f"{self.region}: no record of where its provisioners were deployed")
        kube = ctx.engine.site_kube(self.where)
        name = self.before.secret
        annotations = await kube.secret_annotations(self.where.namespace, name)
        if annotations is None:
            return f"{self.target}: already gone"
        if not MANAGED_SECRET.items() <= annotations.items():
            raise ApplyError(f"{self.target}: not written by coder-migrate (no annotation "
                             f"{next(iter(MANAGED_SECRET))}); left alone")
        deleted = await kube.delete_secret(self.where.namespace, name)
        return f"{self.target}: {'deleted' if deleted else 'already gone'}"

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Store the provisioners' pre-shared key",
            rollback="Nothing to undo: rotate the key with "
                     "`coder-migrate rotate provisioner-psk`.",
        )


def psk_change(region: str, step: Step, action: Action, target: str, reason: str, *,
               before: PskDoc | None = None, after: PskDoc | None = None,
               depends_on: tuple[str, ...] = (), where: ManagedSite | None = None,
               needs_force: bool = False, roll_release: str = "") -> ProvisionerPskChange:
    from coder_migrate.engine.change import change_id

    name = after.secret if after is not None else (before.secret if before else PSK_SECRET)
    return ProvisionerPskChange(
        id=change_id(region, ProvisionerPskChange.KIND, f"{step}/{name}"), region=region,
        step=step, action=action, target=target, reason=reason, before=before, after=after,
        depends_on=depends_on, where=where, needs_force=needs_force, roll_release=roll_release,
    )
