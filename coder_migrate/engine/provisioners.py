"""External provisioners (Coder v2, seed 004 "Workspace provisioner"): the deployment's
pre-shared key (PSK) and each region's ``coder-provisioner`` release, observed and planned.

One PSK per deployment, generated once (``secrets``, 48 bytes) into the primary's Secret
``coder-provisioner-psk`` (key ``psk``: the Secret the primary's ``provisionerDaemon.pskSecretName``
names) and copied into each region's store: by default the Secret of the same name in the
region's namespace, written by coder-migrate; with ``coder_secret_store: {kind: external,
secret: NAME}`` a Secret the site's own store maintains, which coder-migrate only reads (it
refuses to plan when it is missing or lacks ``psk``). A PSK is never shown: plans, journals and
logs carry its fingerprint (``sha256:`` and 16 hex digits of its hash).

Each region's provisioner release carries the fingerprint of the key its pods read as a pod
annotation, so a new key rolls them (``helm upgrade``) and a plan sees pods started with an old
one. ``rotate provisioner-psk`` stages a new key in ``coder-provisioner-psk-next`` (so a run
killed mid-way resumes with the same key), promotes it on the primary, copies it to every region
and rolls their provisioners, then drops the staged copy.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from coder_migrate import sensitive
from coder_migrate.errors import PlanError
from coder_migrate.inventory import Primary, Region, Topology
from coder_migrate.inventory.model import ChartRef
from coder_migrate.providers.helm import ReleaseState
from coder_migrate.tasks import run_all

if TYPE_CHECKING:
    from coder_migrate.engine.world import Engine, ManagedSite

__all__ = [
    "FINGERPRINT_ANNOTATION",
    "MANAGED_SECRET",
    "NEXT_SECRET",
    "PSK_BYTES",
    "PSK_KEY",
    "PSK_SECRET",
    "ProvisionerLeftover",
    "ProvisionerWorld",
    "RegionProvisioners",
    "fingerprint",
    "new_psk",
    "observe_leftovers",
    "observe_provisioners",
    "provisioner_chart",
    "provisioner_regions",
    "psk_secret",
]

PSK_SECRET = "coder-provisioner-psk"  # noqa: S105 - a Secret's name
"""The primary's Secret (``provisionerDaemon.pskSecretName``; the coder-provisioner chart's
default name) and each region's Secret in the default store."""
PSK_KEY = "psk"
"""The key both charts read (helm/provisioner/templates/_coder.tpl, helm/coder)."""
NEXT_SECRET = "coder-provisioner-psk-next"  # noqa: S105 - a Secret's name
"""A rotation's new key, in the primary's namespace until every region has it."""
PSK_BYTES = 48
FINGERPRINT_ANNOTATION = "coder-migrate/provisioner-psk"
"""Pod annotation: the fingerprint of the key the pods were started with."""
PENDING = "(the new key's fingerprint, known at apply)"
DEFAULT_RELEASE = "coder-provisioner"
"""The provisioners' release name by default (coder_provisioners.release), and the chart's."""
MANAGED_SECRET = {"coder-migrate/secret": "provisioner-psk"}
"""Annotation of every PSK Secret coder-migrate writes: only such a Secret is ever deleted
(an external store's Secret never carries it)."""


def new_psk() -> str:
    """A new PSK: 48 random bytes from ``secrets``, URL-safe text (64 characters)."""
    return sensitive.register(secrets.token_urlsafe(PSK_BYTES))


def fingerprint(psk: str) -> str:
    """What may be shown of a PSK: ``sha256:`` and the first 16 hex digits of its hash."""
    return "sha256:" + hashlib.sha256(psk.encode()).hexdigest()[:16]


def psk_secret(region: Region) -> str:
    """The Secret of *region*'s PSK: its external store's, else ``coder-provisioner-psk``."""
    return region.secret_store.secret or PSK_SECRET


def provisioner_regions(topology: Topology, limit: Sequence[str] = ()) -> list[Region]:
    """The regions with external provisioners (v2 only), within *limit* when given."""
    if topology.generation != "v2":
        return []
    wanted = set(limit)
    return [r for r in topology.regions
            if r.provisioners is not None and (not wanted or r.name in wanted)]


def provisioner_chart(topology: Topology, region: Region) -> ChartRef:
    """The region's provisioner chart: its own, else ``coder-provisioner`` of the deployment
    chart's repository and version (both charts are published together)."""
    assert region.provisioners is not None
    if region.provisioners.chart is not None:
        return region.provisioners.chart
    return ChartRef(repo=topology.chart.repo, name="coder-provisioner",
                    version=topology.chart.version)


@dataclass(frozen=True)
class RegionProvisioners:
    """One region's provisioners as observed (fingerprints only, never a key)."""

    secret: str | None
    """Fingerprint of the region's Secret's ``psk``; None when the Secret or key is missing."""
    release: ReleaseState | None


@dataclass(frozen=True)
class ProvisionerWorld:
    primary: str | None
    """Fingerprint of the primary's PSK; None before it is generated."""
    staged: str | None = None
    """Fingerprint of a rotation's staged key; None when no rotation is under way."""
    primary_rolled: str = ""
    """The fingerprint annotation of the primary's pods ("" when never rolled by a rotation)."""
    regions: dict[str, RegionProvisioners] = field(default_factory=dict)


async def _fingerprint_of(engine: Engine, site: Primary | Region, secret: str) -> str | None:
    value = await engine.site_kube(site).secret_value(site.namespace, secret, PSK_KEY)
    return None if value is None else fingerprint(value)


async def _region(engine: Engine, region: Region) -> RegionProvisioners:
    assert region.provisioners is not None
    calls: list[Callable[[], Awaitable[object]]] = [
        partial(_fingerprint_of, engine, region, psk_secret(region)),
        partial(engine.site_helm(region).release, region.namespace, region.provisioners.release),
    ]
    secret, release = await run_all(calls)
    assert release is None or isinstance(release, ReleaseState)
    return RegionProvisioners(secret=secret if isinstance(secret, str) else None,
                              release=release)


async def observe_provisioners(engine: Engine, limit: Iterable[str] = ()) -> (
    ProvisionerWorld | None
):
    """The PSK's fingerprints and the provisioner releases; None without provisioners."""
    topology = engine.topology
    regions = provisioner_regions(topology)
    if not regions:
        return None
    primary = topology.primary
    kube = engine.site_kube(primary)
    included = provisioner_regions(topology, tuple(limit))
    results: list[Any] = await run_all([
        partial(_fingerprint_of, engine, primary, PSK_SECRET),
        partial(_fingerprint_of, engine, primary, NEXT_SECRET),
        partial(kube.deployment_annotations, primary.namespace,
                f"app.kubernetes.io/instance={primary.release}"),
        *(partial(_region, engine, region) for region in included),
    ])
    current, staged, annotations, *states = results
    return ProvisionerWorld(
        primary=current, staged=staged,
        primary_rolled=str(annotations.get(FINGERPRINT_ANNOTATION, "")),
        regions={r.name: s for r, s in zip(included, states, strict=True)},
    )


def check_external_stores(topology: Topology, world: ProvisionerWorld,
                          included: Sequence[str] = ()) -> None:
    """Before any change: every external store's Secret exists with ``psk``; else one line."""
    for region in provisioner_regions(topology, included):
        state = world.regions.get(region.name)
        if region.secret_store.external and state is not None and state.secret is None:
            raise PlanError(
                f"{region.name}: coder_secret_store: Secret {psk_secret(region)} with key "
                f"{PSK_KEY} not found in ns {region.namespace} of {region.kube_context}; "
                "have your store create it (coder-migrate never writes an external store)"
            )


def region_key(world: ProvisionerWorld, region: Region) -> str:
    """The fingerprint the region's pods should run with: its own Secret's for an external
    store, else the primary's (which apply copies); :data:`PENDING` before it exists."""
    if region.secret_store.external:
        state = world.regions.get(region.name)
        return (state.secret if state else None) or PENDING
    return world.primary or PENDING


@dataclass(frozen=True)
class ProvisionerLeftover:
    """A region's provisioners the inventory no longer asks for, as still found there."""

    site: ManagedSite
    why: str
    release_name: str
    release: ReleaseState | None
    """Their release, when still installed."""
    secret: str | None
    """The PSK Secret coder-migrate wrote, when it is still there with its mark."""
    secret_key: str | None
    """That Secret's key's fingerprint (None: no ``psk`` in it)."""


async def _leftover(engine: Engine, site: ManagedSite, why: str, release_name: str,
                    secret: str | None, *, chart: str = "", keep_release: bool = False,
                    ) -> ProvisionerLeftover | None:
    """What is still there; with *chart*, only a release of that chart counts (a record that
    does not name the release: the default name is a guess); *keep_release*: only the
    Secret goes (the release is still wanted)."""
    kube = engine.site_kube(site)
    release = None if keep_release else await engine.site_helm(site).release(
        site.namespace, release_name)
    if release is not None and chart and release.chart_name != chart:
        release = None
    ours, key = False, None
    if secret is not None:
        annotations = await kube.secret_annotations(site.namespace, secret)
        ours = annotations is not None and MANAGED_SECRET.items() <= annotations.items()
        if ours:
            value = await kube.secret_value(site.namespace, secret, PSK_KEY)
            key = None if value is None else fingerprint(value)
    if release is None and not ours:
        return None
    return ProvisionerLeftover(site=site, why=why, release_name=release_name, release=release,
                               secret=secret if ours else None, secret_key=key)


async def observe_leftovers(engine: Engine, managed: dict[str, ManagedSite],
                            limit: Iterable[str] = ()) -> dict[str, ProvisionerLeftover]:
    """Per recorded region, the provisioners coder-migrate installed that the inventory no
    longer asks for and that are still there: the region removed or its coder_provisioners
    dropped (the release and the PSK Secret coder-migrate wrote), or the release renamed."""
    topology = engine.topology
    wanted = set(limit)
    regions = {r.name: r for r in topology.regions}
    calls: list[Callable[[], Awaitable[ProvisionerLeftover | None]]] = []
    for name, site in sorted(managed.items()):
        recorded = site.provisioners
        region = regions.get(name)
        if (wanted and name not in wanted) or site.generation != "v2":
            continue
        if recorded is None:
            if region is None:
                # Recorded before provisioners were recorded: their default names, the
                # release only when it is of the coder-provisioner chart.
                calls.append(partial(_leftover, engine, site,
                                     "the region is no longer in the inventory",
                                     DEFAULT_RELEASE, PSK_SECRET, chart=DEFAULT_RELEASE))
            continue
        if recorded.release == site.release:
            continue
        if region is None:
            why, secret = "the region is no longer in the inventory", recorded.secret
        elif region.provisioners is None or topology.generation != "v2":
            why, secret = "coder_provisioners is no longer set for the region", recorded.secret
        elif region.provisioners.release != recorded.release:
            # Same region, new release name: the old release goes, the key stays in use.
            why = f"coder_provisioners.release is now {region.provisioners.release}"
            secret = None
        elif recorded.secret is not None and recorded.secret != psk_secret(region):
            # The key now lives elsewhere (an external store): the copy coder-migrate wrote goes.
            store = "an external store's" if region.secret_store.external else "another"
            calls.append(partial(
                _leftover, engine, site,
                f"coder_secret_store names {store} Secret ({psk_secret(region)})",
                recorded.release, recorded.secret, keep_release=True))
            continue
        else:
            continue
        calls.append(partial(_leftover, engine, site, why, recorded.release, secret))
    found = await run_all(calls)
    return {leftover.site.name: leftover for leftover in found if leftover is not None}
