"""``RetainRelease``: the old workspace-provider release checked deployed and recorded as
retained for rollback (ConfigMap ``coder-migrate-retained`` next to the journal). Nothing
ever uninstalls it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.engine.change import (
    Action,
    ApplyContext,
    Change,
    Gate,
    change_id,
)
from coder_migrate.engine.guide import Check, Commands, Guide, fixed
from coder_migrate.engine.health import site_gate
from coder_migrate.engine.world import Engine
from coder_migrate.errors import ApplyError, PlanError
from coder_migrate.inventory import Region, WorkspaceProvider

__all__ = ["RETAINED_CONFIG_MAP", "RetainReleaseChange", "RetainSpec", "read_retained",
           "retain_key"]

RETAINED_CONFIG_MAP = "coder-migrate-retained"
_RETAINED_KEY = "retained.json"
_WRITE_ATTEMPTS = 8


class RetainSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str
    release: str
    retained: bool = True


def retain_key(region: str, namespace: str, release: str) -> str:
    return f"{region}/{namespace}/{release}"


async def read_retained(engine: Engine) -> set[str]:
    """Keys (:func:`retain_key`) of the releases recorded as retained."""
    kube = engine.primary_kube
    if not await kube.namespace_exists(engine.state_namespace):
        return set()
    found = await kube.read_config_map(engine.state_namespace, RETAINED_CONFIG_MAP)
    if found is None:
        return set()
    try:
        return set(json.loads(found[0].get(_RETAINED_KEY, "{}")))
    except ValueError:
        raise PlanError(
            f"ConfigMap {engine.state_namespace}/{RETAINED_CONFIG_MAP} in {kube.context} is not "
            "readable JSON; fix or delete it (it only records retained releases)"
        ) from None


class RetainReleaseChange(Change):
    kind: Literal["RetainRelease"] = "RetainRelease"
    IRREVERSIBLE = "the old release was never changed; rollback relies on it"
    after: RetainSpec | None = None

    @classmethod
    def of(cls, region: Region, provider: WorkspaceProvider,
           depends_on: tuple[str, ...]) -> RetainReleaseChange:
        return cls(
            id=change_id(region.name, "RetainRelease", f"{provider.release}.{provider.namespace}"),
            region=region.name, action=Action.ACT,
            target=(f"helm release {provider.release} in ns {provider.namespace} of "
                    f"{region.kube_context}"),
            reason="keep the old workspace-provider release for rollback: check it is still "
                   "deployed and record it as retained (never uninstalled)",
            after=RetainSpec(namespace=provider.namespace, release=provider.release),
            depends_on=depends_on,
        )

    async def act(self, ctx: ApplyContext) -> str:
        """Assert the old release is deployed and record it as retained."""
        engine = ctx.engine
        region = ctx.engine.topology.region(self.region)
        namespace, name = (self.after.namespace, self.after.release) if self.after else ("", "")
        release = await engine.site_helm(region).release(namespace, name)
        if release is None or release.status != "deployed":
            raise ApplyError(
                f"{region.name}: the old workspace-provider release {name} in ns {namespace} is "
                f"{release.status if release else 'not installed'}; it must stay deployed for "
                "rollback: reinstall it with its previous values before going on"
            )
        key = retain_key(region.name, namespace, name)
        record = {"region": region.name, "context": region.kube_context, "namespace": namespace,
                  "release": name, "chart": release.chart, "revision": release.revision,
                  "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        kube = engine.primary_kube
        for _ in range(_WRITE_ATTEMPTS):
            found = await kube.read_config_map(engine.state_namespace, RETAINED_CONFIG_MAP)
            data, version = found if found is not None else ({}, None)
            records = json.loads(data.get(_RETAINED_KEY, "{}"))
            if key in records:
                return f"{self.target}: deployed, already retained"
            records[key] = record
            text = json.dumps(records, sort_keys=True, indent=1)
            if await kube.write_config_map(engine.state_namespace, RETAINED_CONFIG_MAP,
                                           {_RETAINED_KEY: text}, version):
                return f"{self.target}: deployed (revision {release.revision}), retained"
        raise ApplyError(f"{region.name}: the retained record kept changing under us; try again")

    def verify(self, ctx: ApplyContext) -> Gate | None:
        return site_gate(ctx.engine, ctx.site(self.region))

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Keep the old workspace-provider release for rollback", checks=_checks,
            estimate=fixed("about 1 s"),
            rollback="Nothing to undo: the old release was never changed; rollback relies on "
                     "it.",
        )


def _checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    primary = c.topology.primary
    checks = [
        Check(c.helm_status(region, p.release, p.namespace), "STATUS: deployed (never uninstalled)")
        for p in region.workspace_providers
    ]
    checks.append(Check(
        c.kubectl(primary, "get", "configmap", RETAINED_CONFIG_MAP, "-o",
                  "jsonpath={.data.retained\\.json}", namespace=primary.namespace),
        "JSON with the keys " + ", ".join(
            f"{region.name}/{p.namespace}/{p.release}" for p in region.workspace_providers),
    ))
    return checks
