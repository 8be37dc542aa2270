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
6. DNS: the region's own rrsets (``DnsRRSet``, from :func:`coder_migrate.dns.plan.plan_dns`)
   point at the satellite, then ``DnsCheck`` asks the authoritative servers as the region's
   clients would (its own names; the shared name is checked once it is written). The
   shared and primary names (region ``primary``) follow in a final ``dns`` wave, closed by a
   ``DnsCheck`` of every region in scope. ``DnsCheck`` is planned with DNS changes, or until
   the journal holds a finished check of the region by this migration;
7. ``RetainRelease``: the old ``coder/workspace-provider`` release must still be deployed; it
   is recorded as retained for rollback in the ConfigMap ``coder-migrate-retained`` next to
   the journal. Planned until recorded. Nothing here uninstalls anything.

Waves are the deploy's: the canary region alone, then the other regions, then ``dns``.

Rollback (:func:`rollback_migration`) reads the journal and undoes, region by region and in
reverse, what this migration did: DNS snapshots restored, Networking v2 switched off,
the satellite deregistered and uninstalled. The old release was never touched. Each step is
journalled (operation ``v1.20-to-v1.21-rollback``, and a ``rolled-back`` entry of the
migration's change), so a re-run resumes and a finished rollback does nothing. The journal
holds what the migration wrote to each rrset: one someone else changed since is refused
(``--force`` restores it anyway); a provider whose Networking v2 is already off is left be.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from coder_migrate.dns.check import check_dns, check_servers, ecs_query, expectations
from coder_migrate.dns.desired import PRIMARY
from coder_migrate.dns.plan import KIND as KIND_DNS
from coder_migrate.dns.plan import describe_records, open_adapter, plan_dns
from coder_migrate.engine.apply import (
    ApplyOptions,
    ApplyReport,
    apply_plan,
    register_executor,
    release_key_pem,
)
from coder_migrate.engine.deploy import (
    KIND_NAMESPACE,
    KIND_RELEASE,
    KIND_SATELLITE,
    deploy_waves,
    protected_releases,
)
from coder_migrate.engine.journal import Journal, JournalEntry
from coder_migrate.engine.plan import Action, Change, Plan, Wave
from coder_migrate.engine.run import PlanScope, apply_computed
from coder_migrate.engine.values import release_values
from coder_migrate.engine.world import Engine, ManagedSite, SiteState, World, probe_url
from coder_migrate.errors import (
    ApplyError,
    CoderAPIError,
    CoderMigrateError,
    ConfigError,
    DnsError,
    PlanError,
    SecretError,
    redact,
)
from coder_migrate.inventory import Region, Topology
from coder_migrate.providers.coder import (
    CoderV1Client,
    CoderV1SatelliteClient,
    RetryPolicy,
    Workspace,
)
from coder_migrate.providers.coder.health import health_url
from coder_migrate.providers.dns.base import RRSet

__all__ = [
    "KIND_DNS_CHECK",
    "KIND_NETWORKING_V2",
    "KIND_REBUILD",
    "KIND_RETAIN",
    "MIGRATION",
    "RETAINED_CONFIG_MAP",
    "ROLLBACK",
    "STEP_ORDER",
    "MigrationState",
    "ProviderState",
    "RegionStep",
    "WorkspaceState",
    "apply_migration",
    "compute_migration_plan",
    "compute_rollback_plan",
    "dns_access_problem",
    "migration_status",
    "migration_waves",
    "observe_migration",
    "preflight",
    "preflight_problems",
    "primary_url_problems",
    "probe_primary_url",
    "protected_releases",
    "rollback_migration",
    "satellite_primary_url",
]

MIGRATION = "v1.20-to-v1.21"
KIND_NETWORKING_V2 = "ProviderNetworkingV2"
KIND_REBUILD = "WorkspaceRebuild"
KIND_RETAIN = "RetainRelease"
KIND_DNS_CHECK = "DnsCheck"
ROLLBACK = f"{MIGRATION}-rollback"
STEP_ORDER = (KIND_NAMESPACE, KIND_RELEASE, KIND_SATELLITE, KIND_NETWORKING_V2, KIND_REBUILD,
              KIND_DNS, KIND_DNS_CHECK, KIND_RETAIN)
"""A region's migration steps in the order they are planned (``migrate status`` uses it)."""
DNS_CHECK_WAIT = 30.0
"""Seconds a DNS check may wait for right answers: PowerDNS LUA health checks run every 5 s
and start at a record's first query."""
RETAINED_CONFIG_MAP = "coder-migrate-retained"
_RETAINED_KEY = "retained.json"
REBUILD_TIMEOUT = 600.0
CONNECTIVITY_TIMEOUT = 60.0
PRIMARY_URL_TIMEOUT = 5.0
"""Seconds preflight gives each satellite's primaryURL to answer (one try, no retries)."""
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
    primary_url_problems: dict[str, str] = field(default_factory=dict)
    """Per region: why the primaryURL its satellite is configured with does not answer."""
    dns_problem: str = ""
    """Why the DNS provider refuses the inventory's credentials ("" when they work)."""


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


async def _migration_history(engine: Engine) -> list[JournalEntry]:
    kube = engine.primary_kube
    if not await kube.namespace_exists(engine.state_namespace):
        return []
    history = await Journal(kube, engine.state_namespace).history()
    return [e for e in history if e.operation == MIGRATION]


async def _finished(engine: Engine, kind: str) -> set[str]:
    """Change ids of *kind* this migration finished (their latest journal entry is done)."""
    latest = Journal.latest(await _migration_history(engine))
    return {i for i, e in latest.items() if e.phase == "done" and f"/{kind}/" in i}


async def _rebuilt(engine: Engine) -> set[str]:
    return await _finished(engine, KIND_REBUILD)


async def _dns_checked(engine: Engine) -> set[str]:
    """Regions (or ``primary``) whose DNS check this migration finished."""
    return {i.split("/", 1)[0] for i in await _finished(engine, KIND_DNS_CHECK)}


async def observe_migration(engine: Engine, limit: Sequence[str] = ()) -> MigrationState:
    """Read the primary (version, providers, workspaces), helm, kube and the records; at the
    same time probe each satellite's primaryURL and the DNS provider's credentials."""
    state, unreachable, dns_problem = await asyncio.gather(
        _observe_primary_and_sites(engine, limit),
        primary_url_problems(engine, _regions(engine.topology, limit)),
        dns_access_problem(engine.topology),
    )
    state.primary_url_problems = unreachable
    state.dns_problem = dns_problem
    return state


def satellite_primary_url(topology: Topology, region: Region) -> str:
    """The primary URL rendered into *region*'s satellite values (``coder_values`` may
    override it), i.e. exactly what the satellite will dial."""
    satellite = release_values(topology, region).get("coderd", {}).get("satellite", {})
    url = satellite.get("primaryURL") if isinstance(satellite, dict) else None
    return str(url or topology.primary.access_url)


async def probe_primary_url(url: str, token: str | None) -> str:
    """Why *url* does not answer as a Coder primary, or "" when it does.

    The version call of the v1 client (``GET /api``, whose ``coder-version`` header names a
    Coder primary), with a short timeout and no retries: preflight must not hang. *token* is
    ``None`` for a URL on another origin than the inventory's primary: the session token is
    never sent anywhere but the primary it belongs to, and without it a ``401`` (the route
    is authenticated) still proves a server answers there.
    """
    if token is None:
        return await _probe_without_token(url)
    try:
        async with CoderV1Client(url, token, timeout=PRIMARY_URL_TIMEOUT,
                                 retry=RetryPolicy(attempts=1)) as coder:
            version = await coder.version(refresh=True)
    except CoderAPIError as error:
        return redact(str(error))
    except httpx.InvalidURL as error:
        return f"not a usable URL ({error})"
    if version.major is None:
        return "GET /api answered without a coder-version header: not a Coder primary"
    return ""


async def _probe_without_token(url: str) -> str:
    try:
        async with httpx.AsyncClient(timeout=PRIMARY_URL_TIMEOUT) as client:
            response = await client.get(url.rstrip("/") + "/api")
    except httpx.InvalidURL as error:
        return f"not a usable URL ({error})"
    except httpx.HTTPError as error:
        return f"could not reach {url} ({type(error).__name__})"
    if "coder-version" in response.headers or response.status_code == 401:
        return ""
    return (f"GET /api answered {response.status_code} without a coder-version header: "
            "not a Coder primary")


def _same_origin(first: str, second: str) -> bool:
    a, b = httpx.URL(first), httpx.URL(second)
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


async def primary_url_problems(engine: Engine, regions: Sequence[Region]) -> dict[str, str]:
    """Per region whose satellite's primaryURL does not answer from here, why; each distinct
    URL is probed once, all at the same time.

    The probe runs where coder-migrate runs, not inside the region's network: it proves the
    URL is right and the primary serves it, not that the region's egress allows it.
    """
    topology = engine.topology
    if topology.generation != "v1" or not regions:
        return {}
    urls = {r.name: satellite_primary_url(topology, r) for r in regions}
    distinct = sorted(set(urls.values()))
    token = engine.session_token()
    primary = topology.primary.access_url
    reasons = dict(zip(distinct, await asyncio.gather(
        *(probe_primary_url(u, token if _same_origin(u, primary) else None) for u in distinct)
    ), strict=True))
    return {
        name: f"the satellite's primaryURL {url} does not answer from here: {reasons[url]}"
        for name, url in urls.items() if reasons[url]
    }


async def dns_access_problem(topology: Topology) -> str:
    """Why the inventory's DNS credentials do not work, or "" (nothing is changed)."""
    dns = topology.dns
    try:
        async with open_adapter(topology) as adapter:
            await adapter.check_access()
    except (DnsError, SecretError, ConfigError) as error:
        return (f"the {dns.provider} zone {dns.zone} cannot be used with the inventory's "
                f"coder_dns settings: {redact(str(error))}")
    return ""


async def _observe_primary_and_sites(
    engine: Engine, limit: Sequence[str] = ()
) -> MigrationState:
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
    dns = [f"dns: {state.dns_problem}"] if state.dns_problem else []
    if state.primary_problem:
        return [f"primary: {state.primary_problem}", *dns]
    problems = []
    if not state.version_ok:
        problems.append(
            f"primary: the primary runs Coder {state.version or 'unknown'} (coder-version "
            "header): upgrade the primary to 1.21 first"
        )
    for region in _regions(topology, limit):
        problems += [f"{region.name}: {p}" for p in _region_problems(region, state)]
    return problems + dns


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
    unreachable = state.primary_url_problems.get(region.name)
    if unreachable:
        problems.append(unreachable)
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


def _dns_check_change(site: str, regions: Sequence[str], *, shared: bool,
                      after: tuple[str, ...], why: str) -> Change:
    what = "every region's names and the shared name" if shared else "its own names"
    return Change(
        id=change_id(site, KIND_DNS_CHECK, "answers"), region=site, kind=KIND_DNS_CHECK,
        action=Action.ACT, target=f"DNS answers for {', '.join(regions)}",
        reason=f"ask the authoritative servers as the region's test clients would ({what}; "
               f"{why})",
        after={"regions": list(regions), "shared": shared}, depends_on=after,
    )


def _region_migration_changes(
    region: Region, providers: Sequence[ProviderState], workspace: WorkspaceState | None,
    deploy_ids: Sequence[str], dns_changes: Sequence[Change] = (),
    dns_checked: Collection[str] | None = None,
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
    changes += dns_changes
    effective_dns = [c for c in dns_changes if c.action is not Action.KEEP]
    if dns_checked is not None and (effective_dns or region.name not in dns_checked):
        why = ("its records change in this plan" if effective_dns
               else "not yet checked by this migration")
        changes.append(_dns_check_change(region.name, [region.name], shared=False,
                                         after=tuple(c.id for c in effective_dns[-1:]), why=why))
    previous = tuple(c.id for c in changes if c.action is not Action.KEEP)[-1:]
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
    token_secret_name: str | None = None, dns_changes: Sequence[Change] = (),
    dns_checked: Collection[str] | None = None,
) -> tuple[list[Wave], list[str]]:
    """The migration's waves (canary, then regions, then ``dns``) and the notes to read.

    *dns_changes* are the zone's changes (:func:`plan_dns`); each region's go after its
    rebuild, those of the primary's and the shared names in the final ``dns`` wave (only
    without *limit*: they serve every region). *dns_checked* names the sites whose DNS check
    this migration finished; ``None`` leaves DNS out of the plan.
    """
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
                [c for c in dns_changes if c.region == region.name], dns_checked,
            )
        waves.append(Wave(name=name, regions=tuple(r.name for r in regions),
                          changes=tuple(changes)))
    if dns_checked is not None and not wanted:
        shared = [c for c in dns_changes if c.region == PRIMARY]
        effective = [c for c in shared if c.action is not Action.KEEP]
        final = list(shared)
        if effective or PRIMARY not in dns_checked:
            final.append(_dns_check_change(
                PRIMARY, [r.name for r in topology.regions], shared=True,
                after=tuple(c.id for c in effective[-1:]),
                why="the shared name changes in this plan" if effective
                else "not yet checked by this migration",
            ))
        waves.append(Wave(name="dns", regions=(PRIMARY,), changes=tuple(final)))
    return [w for w in waves if w.changes], notes


async def compute_migration_plan(engine: Engine, scope: PlanScope) -> Plan:
    """Preflight every region in scope, then plan; a failed preflight changes nothing."""
    problems, state = await _preflight(engine, scope.limit)
    raise_preflight(problems)
    world = await engine.observe(scope.limit)
    async with open_adapter(engine.topology) as adapter:
        dns = await plan_dns(engine.topology, adapter)
    waves, notes = migration_waves(
        engine.topology, world, state.providers, state.workspaces, limit=scope.limit,
        token_secret_name=engine.token_secret.name, dns_changes=dns.changes,
        dns_checked=await _dns_checked(engine),
    )
    notes.extend(dns.notes)
    return Plan.build(inventory=engine.topology.source, waves=waves, limit=scope.limit,
                      notes=notes, operation=MIGRATION)


async def apply_migration(
    engine: Engine, scope: PlanScope, options: ApplyOptions, saved: Plan | None = None,
    *, source: str = "plan file",
) -> tuple[Plan, ApplyReport]:
    """The migration (preflight first) through the one apply path."""
    return await apply_computed(
        engine, lambda: compute_migration_plan(engine, scope), options, saved, source=source
    )


# -- executors (idempotent against what is there now) ----------------------------------------


def _region(engine: Engine, change: Change) -> Region:
    try:
        return engine.topology.region(change.region)
    except KeyError:
        raise ApplyError(f"{change.id}: region {change.region} is not in the inventory") from None


async def apply_networking_v2(engine: Engine, change: Change) -> str:
    """Switch Networking v2 to ``after.networking_v2`` (on when migrating, off on rollback)."""
    after = change.after or {}
    name = str(after.get("provider", ""))
    wanted = bool(after.get("networking_v2", True))
    state = "on" if wanted else "off"
    async with engine.coder_v1() as coder:
        provider = next((p for p in await coder.list_providers() if p.name == name), None)
        if provider is None:
            raise ApplyError(f"{change.region}: workspace provider {name!r} no longer exists")
        if provider.enable_net_v2 == wanted:
            return f"workspace provider {name}: Networking v2 already {state}"
        await coder.set_networking_v2(provider.id, wanted)
    return f"workspace provider {name}: Networking v2 switched {state}"


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


async def apply_dns_check(engine: Engine, change: Change) -> str:
    """Ask every authoritative server as the regions' test clients; wrong answers after a
    bounded wait stop the wave."""
    after = change.after or {}
    regions = [str(r) for r in after.get("regions", [])]
    topology = engine.topology
    try:
        if after.get("shared"):
            report = await check_dns(topology, limit=regions, wait=DNS_CHECK_WAIT)
            report.raise_if_failed()
            return (f"dns check: {len(report.results)} answer(s) right for "
                    f"{', '.join(regions)} in {report.seconds:.1f} s")
        asked = await _check_own_names(engine, regions)
    except DnsError as error:
        where = ", ".join(regions)
        raise ApplyError(
            f"{change.region}: DNS does not answer as planned after pointing the records at "
            f"the satellite ({error}); look at `coder-migrate dns check -i INVENTORY` for "
            f"{where}, fix the zone, then run `migrate apply` again (or roll the region back)"
        ) from None
    return f"dns check: {asked} answer(s) right for the own names of {', '.join(regions)}"


async def _check_own_names(engine: Engine, regions: Sequence[str]) -> int:
    """The regions' own and wildcard names (not the shared one, written in the last wave)."""
    topology = engine.topology
    servers = check_servers(topology)
    async with open_adapter(topology) as adapter:
        capabilities = await adapter.capabilities()
    wanted = [e for e in expectations(topology, capabilities, regions=set(regions))
              if e.name != topology.dns.shared_hostname]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DNS_CHECK_WAIT
    while True:
        wrong = []
        for expectation in wanted:
            for server in servers:
                got = await ecs_query(server, expectation.name, expectation.client_subnet,
                                      expectation.rdtype)
                if got != expectation.expected:
                    wrong.append(f"{server} answered {expectation.rdtype} {expectation.name} "
                                 f"to {expectation.client_subnet} with "
                                 f"{', '.join(got) or 'nothing'}, expected "
                                 f"{', '.join(expectation.expected)}")
        if not wrong:
            return len(wanted) * len(servers)
        if loop.time() >= deadline:
            raise DnsError(f"{len(wrong)} answer(s) wrong within {DNS_CHECK_WAIT:.0f} s "
                           f"(first: {wrong[0]})")
        await asyncio.sleep(_POLL)


# -- rollback ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Done:
    """A change this migration journalled since the last rollback of it."""

    change_id: str
    region: str
    kind: str
    snapshot: dict[str, Any] | None
    """``before`` of the first entry of this episode: the state the migration found."""
    written: list[dict[str, Any] | None] = field(default_factory=list)
    """Every state the migration journalled writing in this episode (empty: not journalled)."""


def _rollback_candidates(history: Sequence[JournalEntry]) -> list[_Done]:
    """Changes the migration started since their last finished rollback, in journal order."""
    found: dict[str, _Done] = {}
    for entry in history:
        if entry.operation == ROLLBACK and entry.phase == "done":
            found.pop(entry.change_id, None)
        elif entry.operation == MIGRATION:
            done = found.get(entry.change_id)
            if done is None:
                kind = entry.change_id.split("/")[1] if entry.change_id.count("/") >= 2 else ""
                done = _Done(entry.change_id, entry.region, kind, entry.snapshot)
                found[entry.change_id] = done
            if entry.written is not None and entry.written.state not in done.written:
                done.written.append(entry.written.state)
    return list(found.values())


def _check_regions(topology: Topology, limit: Sequence[str]) -> None:
    known = [r.name for r in topology.regions]
    for name in limit:
        if name not in known:
            raise ConfigError(f"--limit {name}: expected one of the inventory's regions "
                              f"({', '.join(known)})")


def _rrset_key(done: _Done) -> tuple[str, str]:
    if done.snapshot is not None:
        return RRSet.model_validate(done.snapshot).key
    _, _, rtype, name = done.change_id.split("/", 3)
    return name, rtype


async def compute_rollback_plan(
    engine: Engine, limit: Sequence[str] = (), *, force: bool = False
) -> Plan:
    """What undoing the migration of the regions in *limit* (all when empty) still takes.

    The journal says what the migration did; what is there now says what is left to undo,
    so a re-run after a crash plans only the rest and a finished rollback plans nothing.
    The shared and primary DNS names are restored only when every region is rolled back.
    An rrset that is neither as the migration found it nor as it wrote it was changed by
    someone else since: the plan is refused (:class:`PlanError`, one line per rrset), or
    with *force* restores the snapshot anyway and says so.
    """
    topology = engine.topology
    _check_regions(topology, limit)
    wanted = set(limit) or {r.name for r in topology.regions}
    candidates = [
        d for d in _rollback_candidates(await _full_history(engine))
        if d.region in wanted or (d.region == PRIMARY and not limit)
    ]
    dns = [d for d in candidates if d.kind == KIND_DNS]
    current: dict[tuple[str, str], RRSet] = {}
    if dns:
        async with open_adapter(topology) as adapter:
            current = {r.key: r for r in await adapter.observe()}
    providers: dict[str, bool] = {}
    satellites: set[str] = set()
    if any(d.kind in (KIND_NETWORKING_V2, KIND_SATELLITE) for d in candidates):
        async with engine.coder_v1() as coder:
            providers = {p.name: bool(p.enable_net_v2) for p in await coder.list_providers()}
            satellites = {s.name for s in await coder.list_satellites()}
    refused: list[str] = []
    notes: list[str] = []

    async def undo(done: _Done) -> Change | None:
        if done.kind == KIND_DNS:
            have = current.get(_rrset_key(done))
            before = RRSet.model_validate(done.snapshot) if done.snapshot else None
            if have == before:
                return None
            rrset = have or before
            assert rrset is not None
            reason = "restore the rrset as it was before the migration"
            written = [RRSet.model_validate(w) if w else None for w in done.written]
            if written and have not in written:
                changed = (f"{rrset.name} {rrset.type} was changed after the migration wrote "
                           f"it: now {describe_records(have)}, migration wrote "
                           f"{describe_records(written[-1])}")
                if not force:
                    refused.append(f"{changed}; restore by hand or pass --force")
                    return None
                notes.append(f"{changed}; restored to the snapshot anyway (--force)")
                reason += " (changed by someone else since; restored anyway: --force)"
            action = (Action.CREATE if have is None else
                      Action.DELETE if before is None else Action.UPDATE)
            return Change(
                id=done.change_id, region=done.region, kind=KIND_DNS, action=action,
                target=f"{rrset.type} {rrset.name}", reason=reason,
                before=have.model_dump(mode="json") if have else None,
                after=done.snapshot,
            )
        if done.kind == KIND_NETWORKING_V2:
            name = done.change_id.split("/", 2)[2]
            was_on = bool((done.snapshot or {}).get("networking_v2", False))
            if was_on or not providers.get(name, False):
                return None
            return Change(
                id=done.change_id, region=done.region, kind=KIND_NETWORKING_V2,
                action=Action.UPDATE, target=f"workspace provider {name} on the primary",
                reason="switch Networking v2 off again, as it was before the migration",
                before={"provider": name, "networking_v2": True},
                after={"provider": name, "networking_v2": False},
            )
        if done.kind == KIND_SATELLITE:
            if done.region not in satellites:
                return None
            return Change(
                id=done.change_id, region=done.region, kind=KIND_SATELLITE,
                action=Action.DELETE, target=f"satellite registration {done.region} on the primary",
                reason="deregister the satellite the migration registered", needs_force=True,
                before={"name": done.region},
            )
        if done.kind == KIND_RELEASE and done.snapshot is None:
            region = topology.region(done.region)
            release = await engine.site_helm(region).release(region.namespace, region.release)
            if release is None:
                return None
            return Change(
                id=done.change_id, region=done.region, kind=KIND_RELEASE,
                action=Action.DELETE,
                target=f"helm release {region.release} in ns {region.namespace} of "
                       f"{region.kube_context}",
                reason="uninstall the satellite the migration installed (the old "
                       "workspace-provider release stays)", needs_force=True,
                before=ManagedSite.of(topology, region).model_dump(mode="json"),
            )
        return None  # namespaces, rebuilds, checks and retained records: nothing to undo

    primary = [c for d in reversed(candidates) if d.region == PRIMARY
               if (c := await undo(d)) is not None]
    regional: list[Change] = []
    order = list(dict.fromkeys(d.region for d in reversed(candidates) if d.region != PRIMARY))
    for name in order:
        changes = [c for d in reversed(candidates) if d.region == name
                   if (c := await undo(d)) is not None]
        # The region's DNS first (reverse journal order), the rest as journalled in reverse:
        # its clients leave the satellite before it goes.
        regional += [c for c in changes if c.kind == KIND_DNS]
        regional += [c for c in changes if c.kind != KIND_DNS]
    if refused:
        raise PlanError(
            f"rollback refused: {len(refused)} DNS rrset(s) changed after the migration wrote "
            "them; nothing was changed:\n" + "\n".join(refused)
        )
    waves = [Wave(name="dns", regions=(PRIMARY,), changes=tuple(primary)),
             Wave(name="removals", regions=tuple(order), changes=tuple(regional))]
    return Plan.build(inventory=topology.source, waves=waves, limit=tuple(limit),
                      notes=notes, operation=ROLLBACK)


async def rollback_migration(
    engine: Engine, limit: Sequence[str], options: ApplyOptions
) -> tuple[Plan, ApplyReport]:
    """Undo the migration of the regions in *limit* under the apply lock; resumable.

    ``options.force`` restores DNS rrsets someone else changed after the migration wrote
    them; the rollback's own removals never need it."""
    plan = await compute_rollback_plan(engine, limit, force=options.force)
    if plan.is_empty:
        return plan, ApplyReport(run="")

    async def replan() -> Plan:
        return await compute_rollback_plan(engine, limit, force=options.force)

    force = dataclasses.replace(options, force=True, reviewed=False)
    return plan, await apply_plan(engine, plan, replan, force)


async def _full_history(engine: Engine) -> list[JournalEntry]:
    kube = engine.primary_kube
    if not await kube.namespace_exists(engine.state_namespace):
        return []
    history = await Journal(kube, engine.state_namespace).history()
    return [e for e in history if e.operation in (MIGRATION, ROLLBACK)]


# -- status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionStep:
    """Where one region is in the migration."""

    region: str
    step: str
    """Kind of the last finished change, ``rolled back``, or ``not started``."""
    change_id: str = ""
    at: str = ""
    by: str = ""
    next: str = ""
    next_source: str = ""
    """``plan`` (computed now) or ``journal`` (the primary did not answer)."""

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def _next_from_journal(last_kind: str) -> str:
    if last_kind not in STEP_ORDER:
        return STEP_ORDER[0]
    index = STEP_ORDER.index(last_kind)
    return STEP_ORDER[index + 1] if index + 1 < len(STEP_ORDER) else "nothing (migrated)"


async def migration_status(engine: Engine) -> tuple[list[RegionStep], str]:
    """Per region: the last finished step, when, by whom, and what comes next.

    Returns the rows and, when the plan could not be computed, why (then *next* comes from
    the journal).
    """
    topology = engine.topology
    history = await _full_history(engine)
    problem = ""
    planned: dict[str, str] | None = None
    try:
        plan = await compute_migration_plan(engine, PlanScope(dns=True))
    except CoderMigrateError as error:
        problem = redact(str(error)).replace(":\n", ": ").replace("\n", "; ")
    else:
        planned = {}
        for change in plan.effective_changes:
            planned.setdefault(change.region, f"{change.kind}: {change.target}")
        shared = planned.get(PRIMARY)
        if shared:
            for region in topology.regions:
                planned.setdefault(region.name, f"(shared DNS) {shared}")
    rows = []
    for region in topology.regions:
        mine = [e for e in history if e.region == region.name]
        last_done = next((e for e in reversed(mine)
                          if e.operation == MIGRATION and e.phase == "done"), None)
        last = mine[-1] if mine else None
        if last is not None and last.operation == ROLLBACK:
            step = "rolled back" if last.phase == "done" else f"rollback {last.phase}"
            entry: JournalEntry | None = last
        elif last_done is not None:
            step = last_done.change_id.split("/")[1]
            entry = last_done
            if last is not None and last.phase != "done":
                step = f"{step} (then {last.change_id.split('/')[1]} {last.phase})"
                entry = last
        else:
            step, entry = "not started", None
        if planned is not None:
            following, source = planned.get(region.name, "nothing (migrated)"), "plan"
        else:
            kind = last_done.change_id.split("/")[1] if last_done else ""
            following, source = _next_from_journal(kind), "journal"
        rows.append(RegionStep(
            region=region.name, step=step, change_id=entry.change_id if entry else "",
            at=entry.at if entry else "", by=entry.by if entry else "",
            next=following, next_source=source,
        ))
    return rows, problem


register_executor(KIND_DNS_CHECK, apply_dns_check)
register_executor(KIND_NETWORKING_V2, apply_networking_v2)
register_executor(KIND_REBUILD, apply_rebuild)
register_executor(KIND_RETAIN, apply_retain)
