"""The Coder v1.20 -> v1.21 migration: envproxy workspace providers -> satellites.

Per region (design.md, "The migration"), after a preflight of every region in scope:

1. preflight (all problems listed at once, nothing changed when there is one);
2. deploy the satellite in its own namespace and 3. register it: the deploy engine's changes
   (:func:`coder_migrate.engine.deploy.deploy_waves`), kept for the regions only (the primary
   is upgraded to 1.21 before the migration and is not changed by it);
4. ``ProviderNetworkingV2``: one change per workspace provider whose ``enable_net_v2`` is off;
5. ``WorkspaceRebuild``: the region's test workspace is rebuilt, waited for, and reached
   through the satellite. It is planned when this plan switches one of the region's
   providers, or when the journal has no successful rebuild of it by this migration (a
   failed or interrupted rebuild is planned again; a finished migration re-plans empty);
6. DNS: TODO(lead) the DNS wave of the region is wired by the lead (see ``dns_wave_hook``);
7. ``RetainRelease``: the old ``coder/workspace-provider`` release must still be deployed; it
   is recorded as retained for rollback in the ConfigMap ``coder-migrate-retained`` next to
   the journal. Planned until recorded. Nothing here uninstalls anything.

Waves are the deploy's: the canary region alone, then the other regions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx

from coder_migrate.engine.apply import ApplyOptions, ApplyReport, apply_plan, register_executor
from coder_migrate.engine.deploy import KIND_SATELLITE, deploy_waves, protected_releases
from coder_migrate.engine.journal import Journal
from coder_migrate.engine.plan import Action, Change, Plan, Wave
from coder_migrate.engine.run import PlanScope
from coder_migrate.engine.world import Engine, SiteState, World, probe_url
from coder_migrate.errors import (
    ApplyError,
    CoderAPIError,
    KubeError,
    PlanError,
    redact,
)
from coder_migrate.inventory import Region, Topology
from coder_migrate.providers.coder import CoderV1SatelliteClient, Workspace

__all__ = [
    "KIND_NETWORKING_V2",
    "KIND_REBUILD",
    "KIND_RETAIN",
    "MIGRATION",
    "RETAINED_CONFIG_MAP",
    "MigrationState",
    "ProviderState",
    "WorkspaceState",
    "apply_migration",
    "compute_migration_plan",
    "migration_waves",
    "observe_migration",
    "preflight",
    "preflight_problems",
    "protected_releases",
]

MIGRATION = "v1.20-to-v1.21"
KIND_NETWORKING_V2 = "ProviderNetworkingV2"
KIND_REBUILD = "WorkspaceRebuild"
KIND_RETAIN = "RetainRelease"
RETAINED_CONFIG_MAP = "coder-migrate-retained"
_RETAINED_KEY = "retained.json"
SATELLITE_KEY_SECRET = "coder-replica-private-key"  # noqa: S105 - a Secret's name
_SATELLITE_KEY_FIELD = "privateKey"
REBUILD_TIMEOUT = 600.0
CONNECTIVITY_TIMEOUT = 60.0
_POLL = 1.0


# -- what is observed -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderState:
    """One workspace provider named in the inventory, as the primary and helm see it."""

    region: str
    name: str
    found: bool
    provider_id: str = ""
    status: str = ""
    networking_v2: bool = False
    release_status: str = ""
    """Status of the old workspace-provider release ("" when not installed)."""
    retained: bool = False
    """Already recorded as retained for rollback."""


@dataclass(frozen=True)
class WorkspaceState:
    """A region's test workspace."""

    region: str
    name: str
    owner: str
    found: bool
    workspace_id: str = ""
    rebuilt: bool = False
    """The journal holds a finished rebuild of it by this migration (its latest entry)."""


@dataclass
class MigrationState:
    """Everything preflight and the planner read beyond the deploy's :class:`World`."""

    version: str = ""
    version_ok: bool = False
    primary_problem: str = ""
    providers: dict[str, list[ProviderState]] = field(default_factory=dict)
    workspaces: dict[str, WorkspaceState] = field(default_factory=dict)
    sites: dict[str, SiteState] = field(default_factory=dict)
    access_problems: dict[str, list[str]] = field(default_factory=dict)


def change_id(region: str, kind: str, name: str) -> str:
    return f"{region}/{kind}/{name}"


def rebuild_id(region: Region) -> str:
    name = region.test_workspace.name if region.test_workspace else ""
    return change_id(region.name, KIND_REBUILD, name)


def retain_key(region: str, namespace: str, release: str) -> str:
    return f"{region}/{namespace}/{release}"


def _regions(topology: Topology, limit: Sequence[str]) -> list[Region]:
    wanted = set(limit)
    return [r for r in topology.regions if not wanted or r.name in wanted]


async def _retained(engine: Engine) -> set[str]:
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


async def _rebuilt(engine: Engine) -> set[str]:
    """Change ids of rebuilds this migration finished (their latest journal entry is done)."""
    kube = engine.primary_kube
    if not await kube.namespace_exists(engine.state_namespace):
        return set()
    history = await Journal(kube, engine.state_namespace).history()
    latest = Journal.latest(e for e in history if e.operation == MIGRATION)
    return {i for i, e in latest.items() if e.phase == "done" and f"/{KIND_REBUILD}/" in i}


async def observe_migration(engine: Engine, limit: Sequence[str] = ()) -> MigrationState:
    """Read the primary (version, providers, workspaces), helm, kube and the records."""
    topology = engine.topology
    regions = _regions(topology, limit)
    state = MigrationState()
    try:
        async with engine.coder_v1() as coder:
            version = await coder.version(refresh=True)
            state.version = version.raw
            state.version_ok = version.at_least(1, 21)
            providers = {p.name: p for p in await coder.list_providers()}
            workspaces: dict[str, Workspace | None] = {}
            for region in regions:
                test = region.test_workspace
                if test is not None:
                    workspaces[region.name] = await coder.find_workspace(
                        test.name, owner=test.owner
                    )
    except CoderAPIError as error:
        state.primary_problem = (
            f"the primary at {topology.primary.access_url} does not answer: "
            f"{redact(str(error))}"
        )
        return state
    retained, rebuilt = await asyncio.gather(_retained(engine), _rebuilt(engine))

    async def provider_state(region: Region, index: int) -> ProviderState:
        wanted = region.workspace_providers[index]
        release = await engine.site_helm(region).release(wanted.namespace, wanted.release)
        found = providers.get(wanted.name)
        return ProviderState(
            region=region.name, name=wanted.name, found=found is not None,
            provider_id=found.id if found else "", status=found.status if found else "",
            networking_v2=bool(found and found.enable_net_v2),
            release_status=release.status if release else "",
            retained=retain_key(region.name, wanted.namespace, wanted.release) in retained,
        )

    async def access(region: Region) -> list[str]:
        kube = engine.site_kube(region)
        missing = []
        for resource, group in (("deployments", "apps"), ("secrets", ""), ("services", "")):
            if not await kube.can_i("create", resource, region.namespace, group):
                missing.append(resource)
        return missing

    for region in regions:
        state.providers[region.name] = list(await asyncio.gather(
            *(provider_state(region, i) for i in range(len(region.workspace_providers)))
        ))
        test = region.test_workspace
        if test is not None:
            found_ws = workspaces.get(region.name)
            state.workspaces[region.name] = WorkspaceState(
                region=region.name, name=test.name, owner=test.owner, found=found_ws is not None,
                workspace_id=found_ws.id if found_ws else "",
                rebuilt=rebuild_id(region) in rebuilt,
            )
    sites = await asyncio.gather(*(engine.observe_site(r) for r in regions))
    state.sites = {s.name: s for s in sites}
    rights = await asyncio.gather(*(access(r) for r in regions))
    state.access_problems = {r.name: m for r, m in zip(regions, rights, strict=True) if m}
    return state


# -- preflight --------------------------------------------------------------------------------


def preflight_problems(
    topology: Topology, state: MigrationState, limit: Sequence[str] = ()
) -> list[str]:
    """Every reason the migration may not start, one ``"<site>: <problem>"`` per entry."""
    if topology.generation != "v1":
        return [f"primary: the {MIGRATION} migration is for coder_generation v1, "
                f"{topology.source} has {topology.generation}"]
    if state.primary_problem:
        return [f"primary: {state.primary_problem}"]
    problems = []
    if not state.version_ok:
        problems.append(
            f"primary: the primary runs Coder {state.version or 'unknown'} (coder-version "
            "header): upgrade the primary to 1.21 first"
        )
    for region in _regions(topology, limit):
        problems += [f"{region.name}: {p}" for p in _region_problems(region, state)]
    return problems


def _region_problems(region: Region, state: MigrationState) -> list[str]:
    problems = []
    if not region.workspace_providers:
        problems.append("coder_workspace_providers is empty: nothing to migrate to a satellite")
    for wanted, seen in zip(
        region.workspace_providers, state.providers.get(region.name, []), strict=False
    ):
        if wanted.namespace == region.namespace:
            problems.append(
                f"coder_workspace_providers {wanted.name}: namespace {wanted.namespace} is the "
                "satellite's own (coder_namespace); the satellite needs a namespace of its own"
            )
        if not seen.found:
            problems.append(
                f"workspace provider {wanted.name!r} (coder_workspace_providers) does not exist "
                "on the primary; name one of Manage > Providers"
            )
        elif seen.status != "ready":
            problems.append(
                f"workspace provider {wanted.name!r} is {seen.status or 'in an unknown state'}, "
                "not ready"
            )
        if seen.release_status != "deployed":
            problems.append(
                f"the old workspace-provider release {wanted.release} in ns {wanted.namespace} of "
                f"{region.kube_context} is {seen.release_status or 'not installed'}, not deployed"
            )
    test = region.test_workspace
    if test is None:
        problems.append("coder_test_workspace is not set: name a workspace to rebuild")
    else:
        seen_ws = state.workspaces.get(region.name)
        if seen_ws is None or not seen_ws.found:
            problems.append(
                f"test workspace {test.name!r} of {test.owner!r} (coder_test_workspace) does not "
                "exist on the primary"
            )
    site = state.sites.get(region.name)
    if site is not None:
        problems += list(site.tls_problems)
    missing = state.access_problems.get(region.name)
    if missing:
        problems.append(
            f"the operator may not create {', '.join(missing)} in ns {region.namespace} of "
            f"{region.kube_context} (SelfSubjectAccessReview)"
        )
    return problems


async def _preflight(engine: Engine, limit: Sequence[str]) -> tuple[list[str], MigrationState]:
    state = await observe_migration(engine, limit)
    return preflight_problems(engine.topology, state, limit), state


async def preflight(engine: Engine, limit: Sequence[str] = ()) -> list[str]:
    """Every problem that stops the migration, for all regions in scope; nothing changes."""
    problems, _ = await _preflight(engine, limit)
    return problems


def raise_preflight(problems: Sequence[str]) -> None:
    if problems:
        raise PlanError(
            f"preflight found {len(problems)} problem(s); nothing was changed:\n"
            + "\n".join(problems)
        )


# -- the plan ---------------------------------------------------------------------------------


def _networking_changes(
    region: Region, providers: Sequence[ProviderState], after: tuple[str, ...]
) -> list[Change]:
    return [
        Change(
            id=change_id(region.name, KIND_NETWORKING_V2, p.name), region=region.name,
            kind=KIND_NETWORKING_V2, action=Action.UPDATE,
            target=f"workspace provider {p.name} on the primary",
            reason="switch on Networking v2 so its workspaces connect through the satellite",
            before={"provider": p.name, "networking_v2": False},
            after={"provider": p.name, "networking_v2": True}, depends_on=after,
        )
        for p in providers if p.found and not p.networking_v2
    ]


def _region_migration_changes(
    region: Region, providers: Sequence[ProviderState], workspace: WorkspaceState | None,
    deploy_ids: Sequence[str],
) -> list[Change]:
    registration = change_id(region.name, KIND_SATELLITE, region.name)
    after = (registration,) if registration in deploy_ids else ()
    changes = _networking_changes(region, providers, after)
    if workspace is not None and (changes or not workspace.rebuilt):
        why = ("its providers switch to Networking v2 in this plan" if changes
               else "not yet rebuilt by this migration")
        changes.append(Change(
            id=rebuild_id(region), region=region.name, kind=KIND_REBUILD, action=Action.ACT,
            target=f"workspace {workspace.name} of {workspace.owner}",
            reason=f"rebuild and wait for it, then reach it through the satellite ({why})",
            after={"workspace": workspace.name, "owner": workspace.owner,
                   "satellite": region.access_url},
            depends_on=tuple(c.id for c in changes) or after,
        ))
    # TODO(lead): step 6, the region's DNS changes, go here (see dns_wave_hook).
    previous = tuple(c.id for c in changes[-1:])
    for wanted, seen in zip(region.workspace_providers, providers, strict=False):
        if seen.retained:
            continue
        changes.append(Change(
            id=change_id(region.name, KIND_RETAIN, f"{wanted.release}.{wanted.namespace}"),
            region=region.name, kind=KIND_RETAIN, action=Action.ACT,
            target=(f"helm release {wanted.release} in ns {wanted.namespace} of "
                    f"{region.kube_context}"),
            reason="keep the old workspace-provider release for rollback: check it is still "
                   "deployed and record it as retained (never uninstalled)",
            after={"namespace": wanted.namespace, "release": wanted.release,
                   "retained": True},
            depends_on=previous,
        ))
    return changes


def migration_waves(
    topology: Topology, world: World, provider_states: dict[str, list[ProviderState]],
    workspace_states: dict[str, WorkspaceState], *, limit: Sequence[str] = (),
    token_secret_name: str | None = None,
) -> tuple[list[Wave], list[str]]:
    """The migration's waves (canary, then regions) and the notes the reader must see."""
    from coder_migrate.engine.values import TokenSecret

    secret = TokenSecret() if token_secret_name is None else TokenSecret(name=token_secret_name)
    deploy, notes = deploy_waves(topology, world, limit=limit, token_secret=secret)
    primary_changes = [c for w in deploy for c in w.changes if c.region == "primary"]
    if primary_changes:
        notes.append(
            f"the primary differs from the inventory ({len(primary_changes)} change(s)); the "
            "migration does not change the primary: deploy it with `coder-migrate apply`"
        )
    regional: dict[str, list[Change]] = {}
    for wave in deploy:
        if wave.name == "removals":
            continue  # removing regions is the deploy's business, never the migration's
        for change in wave.changes:
            if change.region != "primary":
                regional.setdefault(change.region, []).append(change)
    wanted = set(limit)
    waves = []
    canary = topology.canary
    groups: list[tuple[str, list[Region]]] = []
    if canary is not None:
        groups.append((f"canary {canary.name}", [canary]))
    groups.append(("regions", [r for r in topology.regions if canary is None
                               or r.name != canary.name]))
    for name, regions in groups:
        changes: list[Change] = []
        for region in regions:
            if wanted and region.name not in wanted:
                continue
            deploy_changes = regional.get(region.name, [])
            changes += deploy_changes
            changes += _region_migration_changes(
                region, provider_states.get(region.name, []), workspace_states.get(region.name),
                [c.id for c in deploy_changes],
            )
        waves.append(Wave(name=name, regions=tuple(r.name for r in regions),
                          changes=tuple(changes)))
    return [w for w in waves if w.changes], notes


async def compute_migration_plan(engine: Engine, scope: PlanScope) -> Plan:
    """Preflight every region in scope, then plan; a failed preflight changes nothing."""
    problems, state = await _preflight(engine, scope.limit)
    raise_preflight(problems)
    world = await engine.observe(scope.limit)
    waves, notes = migration_waves(
        engine.topology, world, state.providers, state.workspaces, limit=scope.limit,
        token_secret_name=engine.token_secret.name,
    )
    notes.append(
        "DNS (step 6) is not part of this plan yet: point the regions' GeoDNS records at the "
        "satellites with `coder-migrate apply` (deploy) and check them with `dns check`"
    )
    return Plan.build(inventory=engine.topology.source, waves=waves, limit=scope.limit,
                      notes=notes, operation=MIGRATION)


async def apply_migration(
    engine: Engine, scope: PlanScope, options: ApplyOptions, saved: Plan | None = None,
    *, source: str = "plan file",
) -> tuple[Plan, ApplyReport]:
    """Recompute the plan (preflight first), refuse a stale *saved* one, apply under the lock."""
    plan = await compute_migration_plan(engine, scope)
    if saved is not None:
        saved.ensure_matches(plan, source=source)
    plan.raise_if_unsafe(force=options.force)
    if plan.is_empty:
        return plan, ApplyReport(run="")

    async def replan() -> Plan:
        return await compute_migration_plan(engine, scope)

    return plan, await apply_plan(engine, plan, replan, options)


def dns_wave_hook(engine: Engine, scope: PlanScope) -> None:
    """TODO(lead): plan step 6 per region (the deploy's DNS changes filtered to the region,
    after its WorkspaceRebuild and before its RetainRelease) and drop the note above."""


# -- executors (idempotent against what is there now) ----------------------------------------


def _region(engine: Engine, change: Change) -> Region:
    try:
        return engine.topology.region(change.region)
    except KeyError:
        raise ApplyError(f"{change.id}: region {change.region} is not in the inventory") from None


async def apply_networking_v2(engine: Engine, change: Change) -> str:
    name = str((change.after or {}).get("provider", ""))
    async with engine.coder_v1() as coder:
        provider = next((p for p in await coder.list_providers() if p.name == name), None)
        if provider is None:
            raise ApplyError(f"{change.region}: workspace provider {name!r} no longer exists")
        if provider.enable_net_v2:
            return f"workspace provider {name}: Networking v2 already on"
        await coder.set_networking_v2(provider.id, True)
    return f"workspace provider {name}: Networking v2 switched on"


async def apply_rebuild(engine: Engine, change: Change) -> str:
    region = _region(engine, change)
    test = region.test_workspace
    if test is None:
        raise ApplyError(f"{region.name}: coder_test_workspace is not set")
    async with engine.coder_v1() as coder:
        workspace = await coder.find_workspace(test.name, owner=test.owner)
        if workspace is None:
            raise ApplyError(f"{region.name}: test workspace {test.name!r} of {test.owner!r} "
                             "no longer exists")
        try:
            if not workspace.updating:
                await coder.rebuild_workspace(workspace.id)
            await coder.wait_for_build(workspace.id, timeout=REBUILD_TIMEOUT)
        except CoderAPIError as error:
            raise ApplyError(
                f"{region.name}: rebuilding test workspace {test.name} failed "
                f"({redact(str(error))}); the wave stops here. Look at the workspace's build "
                "log in the dashboard, fix the cause, then run `migrate apply` again (it "
                "resumes), or roll the region back"
            ) from None
    reached = await _reach_through_satellite(engine, region, workspace)
    return f"workspace {test.name}: rebuilt, {reached}"


async def _reach_through_satellite(engine: Engine, region: Region, workspace: Workspace) -> str:
    """The satellite answers /healthz, and (with its key at hand) relays a request to the
    workspace's first app."""
    base = region.access_url.rstrip("/")
    ok, why = await _until(lambda: probe_url(f"{base}/healthz"))
    if not ok:
        raise ApplyError(f"{region.name}: the satellite at {base}/healthz does not answer "
                         f"({why}); check its pods, then run `migrate apply` again")
    try:
        pem = await engine.site_kube(region).secret_value(
            region.namespace, SATELLITE_KEY_SECRET, _SATELLITE_KEY_FIELD
        )
    except KubeError:
        pem = None
    if not pem:
        return f"satellite {base}/healthz OK (no key Secret to look up the workspace's apps)"
    test = region.test_workspace
    assert test is not None  # checked by the caller
    async with CoderV1SatelliteClient(engine.topology.primary.access_url, pem) as satellite:
        address = await satellite.find_workspace_address(test.owner, test.name)
    if not address.apps:
        return f"satellite {base}/healthz OK (the workspace has no app to reach)"
    slug = sorted(address.apps)[0]
    url = f"{base}/@{test.owner}/{test.name}/apps/{slug}/"
    headers = {"Session-Token": engine.session_token()}

    async def app() -> tuple[bool, str]:
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                response = await client.get(url, headers=headers)
        except httpx.HTTPError as error:
            return False, type(error).__name__
        return response.is_success, f"HTTP {response.status_code}"

    ok, why = await _until(app)
    if not ok:
        raise ApplyError(
            f"{region.name}: workspace {test.name} is not reachable through the satellite "
            f"(GET {url}: {why}); check the satellite's logs and the provider's Networking v2, "
            "then run `migrate apply` again"
        )
    return f"reached app {slug} through the satellite"


async def _until(check: Callable[[], Awaitable[tuple[bool, str]]]) -> tuple[bool, str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECTIVITY_TIMEOUT
    while True:
        ok, why = await check()
        if ok or loop.time() >= deadline:
            return ok, why
        await asyncio.sleep(_POLL)


async def apply_retain(engine: Engine, change: Change) -> str:
    """Assert the old release is deployed and record it as retained. Never uninstalls."""
    region = _region(engine, change)
    after = change.after or {}
    namespace, name = str(after.get("namespace", "")), str(after.get("release", ""))
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
    for _ in range(8):
        found = await kube.read_config_map(engine.state_namespace, RETAINED_CONFIG_MAP)
        data, version = found if found is not None else ({}, None)
        records = json.loads(data.get(_RETAINED_KEY, "{}"))
        if key in records:
            return f"{change.target}: deployed, already retained"
        records[key] = record
        text = json.dumps(records, sort_keys=True, indent=1)
        if await kube.write_config_map(engine.state_namespace, RETAINED_CONFIG_MAP,
                                       {_RETAINED_KEY: text}, version):
            return f"{change.target}: deployed (revision {release.revision}), retained"
    raise ApplyError(f"{region.name}: the retained record kept changing under us; try again")


register_executor(KIND_NETWORKING_V2, apply_networking_v2)
register_executor(KIND_REBUILD, apply_rebuild)
register_executor(KIND_RETAIN, apply_retain)
