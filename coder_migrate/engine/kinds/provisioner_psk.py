"""``ProvisionerPsk``: the deployment's provisioner pre-shared key, generated once on the
primary, copied to each region's Secret, and rotated (staged, promoted, dropped).

The key goes from ``secrets`` straight into Kubernetes Secrets and from one Secret to another;
a plan, a journal entry or a log line only ever holds its fingerprint. Each step is idempotent
against what is there now, so a rotation killed mid-way resumes with the staged key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.engine.change import Action, ApplyContext, Change
from coder_migrate.engine.guide import Guide
from coder_migrate.engine.provisioners import (
    FINGERPRINT_ANNOTATION,
    NEXT_SECRET,
    PSK_KEY,
    PSK_SECRET,
    fingerprint,
    new_psk,
    psk_secret,
)
from coder_migrate.errors import ApplyError

__all__ = ["ProvisionerPskChange", "PskDoc", "Step"]

Step = Literal["generate", "copy", "stage", "promote", "drop"]
_MANAGED = {"coder-migrate/secret": "provisioner-psk"}


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

    async def act(self, ctx: ApplyContext) -> str:
        engine = ctx.engine
        primary = engine.topology.primary
        kube = engine.site_kube(primary)
        namespace = primary.namespace
        if self.step in ("generate", "stage"):
            name = PSK_SECRET if self.step == "generate" else NEXT_SECRET
            existing = await kube.secret_value(namespace, name, PSK_KEY)
            if existing is not None:
                return f"{self.target}: already holds {fingerprint(existing)}"
            psk = new_psk()
            await kube.put_secret(namespace, name, {PSK_KEY: psk}, annotations=_MANAGED)
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
            await kube.put_secret(namespace, PSK_SECRET, {PSK_KEY: staged}, annotations=_MANAGED)
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
        await engine.site_kube(region).put_secret(
            region.namespace, psk_secret(region), {PSK_KEY: current}, annotations=_MANAGED)
        return f"{self.target}: holds {fingerprint(current)}"

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Store the provisioners' pre-shared key",
            rollback="Nothing to undo: rotate the key with "
                     "`coder-migrate rotate provisioner-psk`.",
        )


def psk_change(region: str, step: Step, action: Action, target: str, reason: str, *,
               before: PskDoc | None = None, after: PskDoc | None = None,
               depends_on: tuple[str, ...] = ()) -> ProvisionerPskChange:
    from coder_migrate.engine.change import change_id

    name = after.secret if after is not None else (before.secret if before else PSK_SECRET)
    return ProvisionerPskChange(
        id=change_id(region, ProvisionerPskChange.KIND, f"{step}/{name}"), region=region,
        step=step, action=action, target=target, reason=reason, before=before, after=after,
        depends_on=depends_on,
    )
