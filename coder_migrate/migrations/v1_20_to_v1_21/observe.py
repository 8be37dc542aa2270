"""What the migration reads before it plans, once per plan: the primary (version, providers,
workspaces), the deploy's world (kube, helm, registrations), the journal, the retained
records, the operator's rights, each satellite's primaryURL and the DNS credentials."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from coder_migrate.dns.rrset_change import open_adapter
from coder_migrate.engine.journal import Journal, JournalEntry
from coder_migrate.engine.values import release_values
from coder_migrate.engine.world import Engine, SiteState, World
from coder_migrate.errors import CoderAPIError, ConfigError, DnsError, SecretError, redact
from coder_migrate.inventory import Region, Topology, WorkspaceProvider
from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION, ROLLBACK
from coder_migrate.migrations.v1_20_to_v1_21.dns_check import DnsCheckChange
from coder_migrate.migrations.v1_20_to_v1_21.rebuild import WorkspaceRebuildChange, rebuild_id
from coder_migrate.migrations.v1_20_to_v1_21.retain import read_retained, retain_key
from coder_migrate.providers.coder import KubernetesProvider, Workspace
from coder_migrate.providers.coder.probes import probe_primary, same_origin
from coder_migrate.tasks import run_all

__all__ = [
    "PRIMARY_URL_TIMEOUT",
    "MigrationState",
    "ProviderState",
    "WorkspaceState",
    "dns_access_problem",
    "history",
    "observe_migration",
    "primary_url_problems",
    "probe_primary_url",
    "regions_in",
    "satellite_primary_url",
]

PRIMARY_URL_TIMEOUT = 5.0
"""Seconds preflight gives each satellite's primaryURL to answer (one try, no retries)."""


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
    world: World | None = None
    """The deploy's observation (``None`` when the primary did not answer)."""
    dns_checked: set[str] = field(default_factory=set)
    """Sites whose DNS check this migration finished (their latest entry is done)."""


def regions_in(topology: Topology, limit: Sequence[str]) -> list[Region]:
    wanted = set(limit)
    return [r for r in topology.regions if not wanted or r.name in wanted]


async def history(engine: Engine, operations: Sequence[str] = (MIGRATION, ROLLBACK)
                  ) -> list[JournalEntry]:
    """The journal's entries of *operations*, oldest first (archives included)."""
    kube = engine.primary_kube
    if not await kube.namespace_exists(engine.state_namespace):
        return []
    entries = await Journal(kube, engine.state_namespace).history()
    return [e for e in entries if e.operation in operations]


def _finished(entries: Sequence[JournalEntry], kind: str) -> set[str]:
    """Change ids of *kind* the migration finished (their latest journal entry is done)."""
    latest = Journal.latest(e for e in entries if e.operation == MIGRATION)
    return {i for i, e in latest.items() if e.phase == "done" and f"/{kind}/" in i}


async def observe_migration(engine: Engine, limit: Sequence[str] = ()) -> MigrationState:
    """Read the primary, the world and the records; at the same time probe each satellite's
    primaryURL and the DNS provider's credentials."""
    reads: list[Callable[[], Awaitable[object]]] = [
        partial(_observe_primary_and_sites, engine, limit),
        partial(primary_url_problems, engine, regions_in(engine.topology, limit)),
        partial(dns_access_problem, engine.topology),
    ]
    state, unreachable, dns_problem = await run_all(reads)
    assert isinstance(state, MigrationState) and isinstance(unreachable, dict)
    state.primary_url_problems = unreachable
    state.dns_problem = str(dns_problem)
    return state


def satellite_primary_url(topology: Topology, region: Region) -> str:
    """The primary URL rendered into *region*'s satellite values (``coder_values`` may
    override it), i.e. exactly what the satellite will dial."""
    satellite = release_values(topology, region).get("coderd", {}).get("satellite", {})
    url = satellite.get("primaryURL") if isinstance(satellite, dict) else None
    return str(url or topology.primary.access_url)


async def probe_primary_url(url: str, token: str | None) -> str:
    """Why *url* does not answer as a Coder primary, or "" (one try, a short timeout)."""
    return await probe_primary(url, token, timeout=PRIMARY_URL_TIMEOUT)


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
    answers = await run_all([
        partial(probe_primary_url, u, token if same_origin(u, primary) else None)
        for u in distinct
    ])
    reasons = dict(zip(distinct, answers, strict=True))
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


async def _read_primary(
    engine: Engine, regions: Sequence[Region], state: MigrationState
) -> tuple[dict[str, KubernetesProvider], dict[str, Workspace | None]] | None:
    """Version, providers and test workspaces; ``None`` (and why in *state*) when the
    primary does not answer."""
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
                        test.name, owner=test.owner)
    except CoderAPIError as error:
        state.primary_problem = (
            f"the primary at {engine.topology.primary.access_url} does not answer: "
            f"{redact(str(error))}"
        )
        return None
    return providers, workspaces


async def _observe_primary_and_sites(engine: Engine, limit: Sequence[str]) -> MigrationState:
    regions = regions_in(engine.topology, limit)
    state = MigrationState()
    primary = await _read_primary(engine, regions, state)
    if primary is None:
        return state
    providers, workspaces = primary
    # The deploy's world lists registrations, which a primary older than 1.21 cannot: then
    # only the regions' sites are read, for preflight to report every problem at once.
    world_read = (partial(engine.observe, limit) if state.version_ok
                  else partial(_sites_only, engine, regions))
    reads: list[Callable[[], Awaitable[object]]] = [
        world_read,
        partial(read_retained, engine),
        partial(history, engine, (MIGRATION,)),
        partial(run_all, [partial(_missing_rights, engine, r) for r in regions]),
    ]
    world, retained, entries, rights = await run_all(reads)
    assert isinstance(retained, set) and isinstance(entries, list)
    rebuilt = _finished(entries, WorkspaceRebuildChange.KIND)
    state.dns_checked = {i.split("/", 1)[0] for i in _finished(entries, DnsCheckChange.KIND)}
    for region in regions:
        state.providers[region.name] = await run_all([
            partial(_provider_state, engine, region, wanted, providers, retained)
            for wanted in region.workspace_providers
        ])
        test = region.test_workspace
        if test is not None:
            found = workspaces.get(region.name)
            state.workspaces[region.name] = WorkspaceState(
                region=region.name, name=test.name, owner=test.owner, found=found is not None,
                workspace_id=found.id if found else "", rebuilt=rebuild_id(region) in rebuilt,
            )
    if isinstance(world, World):
        state.world, state.sites = world, {r.name: world.sites[r.name] for r in regions}
    else:
        assert isinstance(world, dict)
        state.sites = world
    assert isinstance(rights, list)
    state.access_problems = {r.name: m for r, m in zip(regions, rights, strict=True) if m}
    return state


async def _sites_only(engine: Engine, regions: Sequence[Region]) -> dict[str, SiteState]:
    states = await run_all([partial(engine.observe_site, r) for r in regions])
    return {s.name: s for s in states}


async def _provider_state(
    engine: Engine, region: Region, wanted: WorkspaceProvider,
    providers: dict[str, KubernetesProvider], retained: set[str],
) -> ProviderState:
    release = await engine.site_helm(region).release(wanted.namespace, wanted.release)
    found = providers.get(wanted.name)
    return ProviderState(
        region=region.name, name=wanted.name, found=found is not None,
        provider_id=found.id if found else "", status=found.status if found else "",
        networking_v2=bool(found and found.enable_net_v2),
        release_status=release.status if release else "",
        retained=retain_key(region.name, wanted.namespace, wanted.release) in retained,
    )


async def _missing_rights(engine: Engine, region: Region) -> list[str]:
    """What the operator may not create in the region's namespace (SelfSubjectAccessReview)."""
    kube = engine.site_kube(region)
    missing = []
    for resource, group in (("deployments", "apps"), ("secrets", ""), ("services", "")):
        if not await kube.can_i("create", resource, region.namespace, group):
            missing.append(resource)
    return missing
