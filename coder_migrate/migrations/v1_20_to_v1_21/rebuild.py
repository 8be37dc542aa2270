"""``WorkspaceRebuild``: the region's test workspace rebuilt, waited for, and reached through
the satellite: the proof that the region works after its providers switched."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.engine.change import (
    Action,
    ApplyContext,
    Change,
    Gate,
    change_id,
)
from coder_migrate.engine.guide import Check, Commands, Guide
from coder_migrate.engine.health import site_gate
from coder_migrate.engine.kinds.registration import release_key_pem
from coder_migrate.engine.world import Engine
from coder_migrate.errors import ApplyError, CoderAPIError, redact
from coder_migrate.inventory import Region
from coder_migrate.poll import attempts
from coder_migrate.providers.coder import CoderV1SatelliteClient, Workspace
from coder_migrate.providers.coder.health import health_url
from coder_migrate.providers.coder.probes import probe_url

__all__ = ["REBUILD_TIMEOUT", "RebuildSpec", "WorkspaceRebuildChange", "rebuild_id"]

KIND = "WorkspaceRebuild"
REBUILD_TIMEOUT = 600.0
CONNECTIVITY_TIMEOUT = 60.0
CONNECTIVITY_POLL = 1.0
APP_TIMEOUT = 10.0


class RebuildSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: str
    owner: str
    satellite: str
    """The satellite's access URL the workspace is reached through."""


def rebuild_id(region: Region) -> str:
    name = region.test_workspace.name if region.test_workspace else ""
    return change_id(region.name, KIND, name)


class WorkspaceRebuildChange(Change):
    kind: Literal["WorkspaceRebuild"] = "WorkspaceRebuild"
    IRREVERSIBLE = "rollback does not rebuild the workspace"
    after: RebuildSpec | None = None

    @classmethod
    def of(cls, region: Region, workspace: str, owner: str, *, why: str,
           depends_on: tuple[str, ...]) -> WorkspaceRebuildChange:
        return cls(
            id=rebuild_id(region), region=region.name, action=Action.ACT,
            target=f"workspace {workspace} of {owner}",
            reason=f"rebuild and wait for it, then reach it through the satellite ({why})",
            after=RebuildSpec(workspace=workspace, owner=owner, satellite=region.access_url),
            depends_on=depends_on,
        )

    async def act(self, ctx: ApplyContext) -> str:
        region = ctx.engine.topology.region(self.region)
        test = region.test_workspace
        if test is None:
            raise ApplyError(f"{region.name}: coder_test_workspace is not set")
        async with ctx.engine.coder_v1() as coder:
            workspace = await coder.find_workspace(test.name, owner=test.owner)
            if workspace is None:
                raise ApplyError(f"{region.name}: test workspace {test.name!r} of "
                                 f"{test.owner!r} no longer exists")
            try:
                if not workspace.updating:
                    await coder.rebuild_workspace(workspace.id)
                await coder.wait_for_build(workspace.id, timeout=REBUILD_TIMEOUT)
            except CoderAPIError as error:
                raise ApplyError(
                    f"{region.name}: rebuilding test workspace {test.name} failed "
                    f"({redact(str(error))}); the wave stops here. Look at the workspace's "
                    "build log in the dashboard, fix the cause, then run `migrate apply` again "
                    "(it resumes), or roll the region back"
                ) from None
        reached = await _reach_through_satellite(ctx.engine, region, workspace)
        return f"workspace {test.name}: rebuilt, {reached}"

    def verify(self, ctx: ApplyContext) -> Gate | None:
        return site_gate(ctx.engine, ctx.site(self.region))

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Rebuild the test workspace and reach it through the satellite",
            checks=_checks,
            estimate=lambda _: (
                "seconds in the lab (the emulator builds at once); in production as long as "
                f"the workspace's build, at most {REBUILD_TIMEOUT:.0f} s before apply stops. "
                "A failed rebuild stops the wave; the other regions are untouched"),
            rollback="Nothing to undo: rollback does not rebuild the workspace.",
        )


def _checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    test = region.test_workspace
    what = f"workspace {test.name} of {test.owner}" if test else "the test workspace"
    return [
        Check("the primary's dashboard: Workspaces",
              f"{what}: latest build done, workspace ON", manual=True),
        Check(c.cli("migrate", "status"), f"{region.name} is at {KIND} or a later step"),
    ]


async def _until(check: Callable[[], Awaitable[tuple[bool, str]]]) -> tuple[bool, str]:
    ok, why = False, "not checked"
    async for attempt in attempts(CONNECTIVITY_TIMEOUT, interval=CONNECTIVITY_POLL):
        ok, why = await check()
        if ok or attempt.last:
            break
    return ok, why


async def _reach_through_satellite(engine: Engine, region: Region, workspace: Workspace) -> str:
    """The satellite answers its health path, and (with its key at hand) relays a request to the
    workspace's first app."""
    base = region.access_url.rstrip("/")
    health = health_url(base, "v1")
    ok, why = await _until(lambda: probe_url(health))
    if not ok:
        raise ApplyError(f"{region.name}: the satellite at {health} does not answer "
                         f"({why}); check its pods, then run `migrate apply` again")
    pem = await release_key_pem(engine, region)
    if pem is None:
        return f"satellite {health} OK (no key Secret to look up the workspace's apps)"
    test = region.test_workspace
    assert test is not None  # checked by the caller
    async with CoderV1SatelliteClient(engine.topology.primary.access_url, pem) as satellite:
        address = await satellite.find_workspace_address(test.owner, test.name)
    if not address.apps:
        return f"satellite {health} OK (the workspace has no app to reach)"
    slug = sorted(address.apps)[0]
    url = f"{base}/@{test.owner}/{test.name}/apps/{slug}/"
    headers = {"Session-Token": engine.session_token()}
    ok, why = await _until(lambda: probe_url(url, headers=headers, timeout=APP_TIMEOUT))
    if not ok:
        raise ApplyError(
            f"{region.name}: workspace {test.name} is not reachable through the satellite "
            f"(GET {url}: {why}); check the satellite's logs and the provider's Networking v2, "
            "then run `migrate apply` again"
        )
    return f"reached app {slug} through the satellite"
