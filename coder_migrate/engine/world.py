"""What is there: the primary and every region observed concurrently, before planning.

:class:`Engine` binds an inventory to its adapters (one kube and one helm client per site,
the Coder client of the primary, the DNS adapter) and resolves secrets once. :meth:`observe`
reads kube (namespaces, TLS secrets, proxy token secrets, pods), helm (releases and their
values), the Coder primary (satellites or workspace proxies) and, for v1 regions with a
running satellite, the satellite's public key. Nothing is changed.

Regions coder-migrate deployed are recorded in a ConfigMap next to the journal
(``coder-migrate-sites``), so a region removed from the inventory can still be found,
deregistered and uninstalled.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from coder_migrate.batching import GroupCommit
from coder_migrate.engine.infra import DATABASE_SECRET, database_secret_data
from coder_migrate.engine.provisioners import (
    PSK_SECRET,
    ProvisionerLeftover,
    ProvisionerWorld,
    observe_leftovers,
    observe_provisioners,
)
from coder_migrate.errors import CoderAPIError, CoderUnavailable, KubeError, PlanError
from coder_migrate.inventory import Primary, Region, Topology
from coder_migrate.providers.coder import (
    OPERATIONS_RETRY,
    CoderV1Client,
    CoderV2Client,
    Satellite,
    SatelliteKey,
    WorkspaceProxy,
)
from coder_migrate.providers.coder.v1 import SATELLITE_MIN_VERSION
from coder_migrate.providers.helm import HelmClient, ReleaseState
from coder_migrate.providers.kube import KubeCluster
from coder_migrate.tasks import run_all

if TYPE_CHECKING:
    from coder_migrate.dns.rrset_change import DnsRRSetChange

__all__ = [
    "SITES_CONFIG_MAP",
    "Engine",
    "ManagedSite",
    "PrimaryRecords",
    "SiteState",
    "World",
]

SITES_CONFIG_MAP = "coder-migrate-sites"
_SITES_KEY = "sites.json"
CONCURRENCY = 32
"""Sites observed (and applied) at once; each is a handful of API calls. A site's apply
mostly waits (helm's rollout wait, a satellite starting, a rebuild), so 50 regions finish in
two rounds rather than four (docs/benchmarks.md, the lanes runs of 2026-12-06)."""
HELM_SLOTS_PER_CORE = 4
"""helm processes at once per cluster and core (:attr:`Engine.helm_slots`)."""


class ManagedProvisioners(BaseModel):
    """A region's external provisioners as coder-migrate installed them (v2)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    release: str
    """Their helm release, in the region's namespace."""
    secret: str | None = None
    """The PSK Secret coder-migrate wrote there (kept after the key moved to an external
    store, until a plan finds it gone); None when it never wrote one."""


class ManagedSite(BaseModel):
    """Where coder-migrate deployed a region (kept so a removed region can be found)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    generation: str
    kube_context: str
    kubeconfig: str | None = None
    namespace: str
    release: str
    provisioners: ManagedProvisioners | None = None
    """Its provisioners, once installed: kept after coder_provisioners is dropped, so their
    release and key can be found and removed (a plan observes whether they are still there)."""

    @classmethod
    def of(cls, topology: Topology, region: Region) -> ManagedSite:
        provisioners = None
        if region.provisioners is not None and topology.generation == "v2":
            store = region.secret_store
            provisioners = ManagedProvisioners(
                release=region.provisioners.release,
                secret=None if store.external else (store.secret or PSK_SECRET),
            )
        return cls(
            name=region.name, generation=topology.generation, kube_context=region.kube_context,
            kubeconfig=region.kubeconfig, namespace=region.namespace, release=region.release,
            provisioners=provisioners,
        )


@dataclass(frozen=True)
class SiteState:
    """One site (the primary or a region) as observed."""

    name: str
    namespace_exists: bool
    release: ReleaseState | None
    tls_problems: tuple[str, ...] = ()
    token_secret: bool = False
    """v2 regions: the proxy token Secret exists with its key."""
    pods_ready: int = 0
    pods_total: int = 0
    satellite_key: SatelliteKey | None = None
    """v1 regions: the key the running satellite serves (``None`` when not reachable)."""
    probe_error: str = ""
    database_stored: str = ""
    """The primary with coder_database: its Secret is ``missing``, ``differs`` from the
    reference's value or is ``current``; "" otherwise."""


@dataclass(frozen=True)
class PrimaryRecords:
    """What the Coder primary knows about the regions."""

    reachable: bool
    version: str = ""
    satellites: dict[str, Satellite] = field(default_factory=dict)
    proxies: dict[str, WorkspaceProxy] = field(default_factory=dict)


@dataclass(frozen=True)
class World:
    sites: dict[str, SiteState]
    records: PrimaryRecords
    managed: dict[str, ManagedSite]
    """Regions coder-migrate deployed earlier, by name (also those no longer in the inventory)."""
    provisioners: ProvisionerWorld | None = None
    """The provisioners' key and releases (v2 regions with coder_provisioners), else None."""
    provisioner_leftovers: dict[str, ProvisionerLeftover] = field(default_factory=dict)
    """Per region, provisioners coder-migrate installed that the inventory no longer asks
    for (the region removed, coder_provisioners dropped, the release renamed), still there."""


class Engine:
    """An inventory bound to its adapters; the one place the engine gets clients from."""

    def __init__(self, topology: Topology, *, token_secret_name: str | None = None) -> None:
        from coder_migrate.engine.values import TokenSecret

        self.topology = topology
        self.base = Path(topology.source) if topology.source else None
        self.token_secret = TokenSecret() if token_secret_name is None else TokenSecret(
            name=token_secret_name
        )
        self._token: str | None = None
        self._kube: dict[tuple[str, str | None], KubeCluster] = {}
        self._helm: dict[tuple[str, str | None], HelmClient] = {}
        self._recording = asyncio.Lock()
        self.dns_writes: GroupCommit[DnsRRSetChange, bool] | None = None
        """The zone's writes of a wave, batched (:mod:`coder_migrate.dns.rrset_change`)."""
        # helm processes at once per cluster. An install with --wait is mostly asleep: helm
        # polls readiness every 2 s (helm v3 pkg/kube/wait.go:61) and uses about 0.3 s of
        # CPU in all (docs/benchmarks.md), so slots track cores loosely.
        self.helm_slots = HELM_SLOTS_PER_CORE * (os.cpu_count() or 1)

    # -- adapters ---------------------------------------------------------------------------

    def path(self, value: str | None) -> str | None:
        """An inventory path (kubeconfig, chart dir) made absolute from the inventory dir."""
        if value is None:
            return None
        path = Path(value).expanduser()
        if self.base is not None and not path.is_absolute():
            path = self.base / path
        return str(path)

    def kube(self, context: str, kubeconfig: str | None) -> KubeCluster:
        key = (context, self.path(kubeconfig))
        if key not in self._kube:
            self._kube[key] = KubeCluster(context, key[1])
        return self._kube[key]

    def helm(self, context: str, kubeconfig: str | None) -> HelmClient:
        key = (context, self.path(kubeconfig))
        if key not in self._helm:
            self._helm[key] = HelmClient(
                context, key[1], slots=self.helm_slots, storage=self.kube(context, kubeconfig)
            )
        return self._helm[key]

    def site_kube(self, site: Primary | Region | ManagedSite) -> KubeCluster:
        return self.kube(site.kube_context, site.kubeconfig)

    def site_helm(self, site: Primary | Region | ManagedSite) -> HelmClient:
        return self.helm(site.kube_context, site.kubeconfig)

    @property
    def primary_kube(self) -> KubeCluster:
        return self.site_kube(self.topology.primary)

    @property
    def state_namespace(self) -> str:
        """Namespace of the journal, the lock and the sites record: the primary's."""
        return self.topology.primary.namespace

    def session_token(self) -> str:
        if self._token is None:
            self._token = self.topology.session_token.resolve(self.base)
        return self._token

    def coder_v1(self) -> CoderV1Client:
        return CoderV1Client(self.topology.primary.access_url, self.session_token(),
                             retry=OPERATIONS_RETRY)

    def coder_v2(self) -> CoderV2Client:
        return CoderV2Client(self.topology.primary.access_url, self.session_token(),
                             retry=OPERATIONS_RETRY)

    def site(self, name: str) -> Primary | Region:
        """The primary (under its inventory host name, whatever it is) or the region *name*;
        ``KeyError`` for neither."""
        if name == self.topology.primary.name:
            return self.topology.primary
        return self.topology.region(name)

    def sites(self, limit: Iterable[str] = ()) -> list[Primary | Region]:
        wanted = set(limit)
        everything: list[Primary | Region] = [self.topology.primary, *self.topology.regions]
        return [s for s in everything if not wanted or s.name in wanted]

    # -- the sites record -------------------------------------------------------------------

    async def managed_sites(self) -> dict[str, ManagedSite]:
        found = await self.primary_kube.read_config_map(self.state_namespace, SITES_CONFIG_MAP)
        if found is None:
            return {}
        try:
            raw = json.loads(found[0].get(_SITES_KEY, "{}"))
            return {name: ManagedSite.model_validate(item) for name, item in raw.items()}
        except (ValueError, TypeError) as error:
            raise PlanError(
                f"ConfigMap {self.state_namespace}/{SITES_CONFIG_MAP} in "
                f"{self.primary_kube.context} is not readable ({type(error).__name__}); "
                "fix or delete it"
            ) from None

    async def record_site(self, site: ManagedSite | None, *, remove: str = "") -> None:
        """Add (or with *remove*, drop) a region in the sites record."""
        async with self._recording:
            await self._record_site(site, remove)

    async def _record_site(self, site: ManagedSite | None, remove: str) -> None:
        cluster = self.primary_kube
        for _ in range(8):
            found = await cluster.read_config_map(self.state_namespace, SITES_CONFIG_MAP)
            data, version = found if found is not None else ({}, None)
            raw = json.loads(data.get(_SITES_KEY, "{}"))
            if site is not None:
                recorded = raw.get(site.name)
                raw[site.name] = site.model_dump(mode="json")
                _keep_provisioners(raw[site.name], recorded)
            if remove:
                raw.pop(remove, None)
            text = json.dumps(raw, sort_keys=True, indent=1)
            if await cluster.write_config_map(
                self.state_namespace, SITES_CONFIG_MAP, {_SITES_KEY: text}, version
            ):
                return
        raise KubeError(f"{cluster.context}: sites record kept changing under us; try again")

    # -- observation ------------------------------------------------------------------------

    async def observe(self, limit: Iterable[str] = ()) -> World:
        """Everything the deploy plan compares with the inventory, read concurrently."""
        sites = self.sites(limit)
        # One client for every satellite key fetch: a client per region costs a TLS context.
        async with self.coder_v1() as prober:
            calls: list[Callable[[], Awaitable[dict[str, ManagedSite] | SiteState]]] = [
                self._managed_or_empty,
                *(partial(self.observe_site, site, prober=prober) for site in sites),
            ]
            managed, *states = await run_all(calls, limit=CONCURRENCY)
        site_states = [state for state in states if isinstance(state, SiteState)]
        primary_name = self.topology.primary.name
        primary_state = next((s for s in site_states if s.name == primary_name), None)
        records = await self.primary_records(primary_state)
        assert isinstance(managed, dict)
        observations: list[Callable[[], Awaitable[object]]] = [
            partial(observe_provisioners, self, limit),
            partial(observe_leftovers, self, managed, limit),
        ]
        provisioners, leftovers = await run_all(observations)
        assert provisioners is None or isinstance(provisioners, ProvisionerWorld)
        assert isinstance(leftovers, dict)
        return World(sites={s.name: s for s in site_states}, records=records, managed=managed,
                     provisioners=provisioners, provisioner_leftovers=leftovers)

    async def _managed_or_empty(self) -> dict[str, ManagedSite]:
        if not await self.primary_kube.namespace_exists(self.state_namespace):
            return {}
        return await self.managed_sites()

    async def observe_site(
        self, site: Primary | Region, *, prober: CoderV1Client | None = None
    ) -> SiteState:
        kube = self.site_kube(site)
        namespace = site.namespace
        exists = await kube.namespace_exists(namespace)
        if not exists:
            return SiteState(
                name=site.name, namespace_exists=False, release=None,
                tls_problems=_tls_missing(site, "its namespace does not exist"),
            )
        reads: list[Callable[[], Awaitable[object]]] = [
            partial(self.site_helm(site).release, namespace, site.release),
            partial(self._tls_problems, kube, site),
            partial(self._has_token_secret, kube, site),
            partial(kube.pods, namespace),
            partial(self._database_secret, kube, site),
        ]
        release, tls_problems, token_secret, pods, database = await run_all(reads)
        assert release is None or isinstance(release, ReleaseState)
        assert isinstance(tls_problems, tuple) and isinstance(pods, list)
        key: SatelliteKey | None = None
        probe_error = ""
        if (
            isinstance(site, Region) and self.topology.generation == "v1"
            and release is not None and release.status == "deployed"
        ):
            key, probe_error = await self._satellite_key(site, prober)
        return SiteState(
            name=site.name, namespace_exists=True, release=release, tls_problems=tls_problems,
            token_secret=bool(token_secret), pods_ready=sum(p.ready for p in pods),
            pods_total=len(pods), satellite_key=key, probe_error=probe_error,
            database_stored=str(database),
        )

    async def _database_secret(self, kube: KubeCluster, site: Primary | Region) -> str:
        if not isinstance(site, Primary) or site.database is None:
            return ""
        wanted = database_secret_data(self.topology, site)
        for key, value in wanted.items():
            found = await kube.secret_value(site.namespace, DATABASE_SECRET, key)
            if found is None:
                return "missing"
            if found != value:
                return "differs"
        return "current"

    async def _has_token_secret(self, kube: KubeCluster, site: Primary | Region) -> bool:
        if not isinstance(site, Region) or self.topology.generation != "v2":
            return False
        keys = await kube.secret_keys(site.namespace, self.token_secret.name)
        return keys is not None and self.token_secret.key in keys

    async def _tls_problems(self, kube: KubeCluster, site: Primary | Region) -> tuple[str, ...]:
        if site.tls is None:
            return ()
        problems = []
        names = dict.fromkeys(n for n in (site.tls.host_secret, site.tls.wildcard_secret) if n)
        for name in names:
            keys = await kube.secret_keys(site.namespace, name)
            where = f"{kube.context} ns {site.namespace}"
            if keys is None:
                problems.append(f"TLS secret {name} does not exist in {where}")
            elif not {"tls.crt", "tls.key"} <= keys:
                missing = sorted({"tls.crt", "tls.key"} - keys)
                problems.append(f"TLS secret {name} in {where} lacks {', '.join(missing)}")
        return tuple(problems)

    async def _satellite_key(
        self, region: Region, prober: CoderV1Client | None
    ) -> tuple[SatelliteKey | None, str]:
        try:
            if prober is not None:
                return await prober.fetch_satellite_key(region.access_url), ""
            async with self.coder_v1() as client:
                return await client.fetch_satellite_key(region.access_url), ""
        except CoderAPIError as error:
            return None, str(error)

    async def primary_records(self, primary_state: SiteState | None) -> PrimaryRecords:
        """Satellites or proxies the primary has; an unreachable *deployed* primary is an error.

        A primary whose release coder-migrate is about to install for the first time cannot
        answer yet; then nothing is registered and the plan says so.
        """
        first_install = primary_state is not None and primary_state.release is None
        try:
            if self.topology.generation == "v1":
                async with self.coder_v1() as v1:
                    v1_version = await v1.version()
                    # Coder 1.20 has no satellites (V1 §3): none is registered, and a plan
                    # that would register one refuses (deploy.py) until the primary is 1.21.
                    satellites = (
                        {} if v1_version.known_older_than(*SATELLITE_MIN_VERSION)
                        else {s.name: s for s in await v1.list_satellites()}
                    )
                return PrimaryRecords(
                    reachable=True, version=v1_version.raw, satellites=satellites
                )
            async with self.coder_v2() as v2:
                version = (await v2.buildinfo()).version
                # The primary lists itself as the proxy named "primary" (Coder's own name).
                proxies = {p.name: p for p in await v2.list_proxies() if not p.is_primary}
            return PrimaryRecords(reachable=True, version=version, proxies=proxies)
        except CoderUnavailable:
            if first_install:
                return PrimaryRecords(reachable=False)
            raise


def _keep_provisioners(new: dict[str, Any], recorded: object) -> None:
    """Provisioners stay recorded once installed, and so does the Secret coder-migrate wrote
    once the key moves to an external store: dropping coder_provisioners, or an apply stopped
    after the store changed, must still find them to remove them (a plan checks they are
    there)."""
    old = recorded.get("provisioners") if isinstance(recorded, dict) else None
    if not isinstance(old, dict):
        return
    if new.get("provisioners") is None:
        new["provisioners"] = old
    elif new["provisioners"].get("secret") is None and old.get("secret"):
        new["provisioners"]["secret"] = old["secret"]


def _tls_missing(site: Primary | Region, why: str) -> tuple[str, ...]:
    if site.tls is None:
        return ()
    names = dict.fromkeys(n for n in (site.tls.host_secret, site.tls.wildcard_secret) if n)
    return tuple(f"TLS secret {name} cannot exist in ns {site.namespace}: {why}" for name in names)

