"""``status``: one row per site: release, pods, registration or proxy health, reachability."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial

from coder_migrate.engine.provisioner_status import provisioner_status
from coder_migrate.engine.world import Engine, SiteState, World
from coder_migrate.inventory import Primary, Region
from coder_migrate.providers.coder.health import health_url
from coder_migrate.providers.coder.probes import probe_url
from coder_migrate.tasks import run_all

__all__ = ["SiteStatus", "site_statuses"]


@dataclass(frozen=True)
class SiteStatus:
    site: str
    chart: str
    release_status: str
    pods: str
    registration: str
    """ok, unregistered, unreachable, unhealthy (v2: as the primary reports it)."""
    detail: str
    access_url: str
    reachable: bool
    service: str = "-"
    """How clients reach the site's Service: a load balancer's external address, NodePort or
    ClusterIP (``-``: no Service)."""
    zones: str = "-"
    """Replicas ready per availability zone (``zone ready/total``, by the pods' nodes)."""
    provisioners: str = ""
    """v2 regions with coder_provisioners: ``<connected>/<replicas> connected``."""
    provisioners_ok: bool = True

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def healthy(self) -> bool:
        return (self.registration == "ok" and self.reachable
                and self.release_status == "deployed" and self.provisioners_ok)


async def site_statuses(engine: Engine, limit: Sequence[str] = ()) -> list[SiteStatus]:
    world = await engine.observe(limit)
    sites = engine.sites(limit)
    rows = await run_all([
        partial(_status, engine, site, world.sites[site.name], world) for site in sites
    ])
    connected = await provisioner_status(engine, world)
    return [_with_provisioners(row, *connected[row.site]) if row.site in connected else row
            for row in rows]


def _with_provisioners(row: SiteStatus, shown: str, problem: str) -> SiteStatus:
    return replace(row, provisioners=shown, provisioners_ok=not problem,
                   detail="; ".join(p for p in (row.detail, problem) if p))


async def _status(
    engine: Engine, site: Primary | Region, state: SiteState, world: World
) -> SiteStatus:
    release = state.release
    url = health_url(site.access_url, engine.topology.generation)
    if isinstance(site, Primary):
        # The primary's own API answering is its reachability (its /healthz may need auth).
        reachable, why = world.records.reachable, "its API does not answer"
    else:
        reachable, why = await probe_url(url)
    registration, detail = _registration(engine, site, state, world)
    service, zones = await _service_and_zones(engine, site, state)
    if not reachable and not detail:
        detail = f"{url}: {why}"
    return SiteStatus(
        site=site.name,
        chart=release.chart if release else "-",
        release_status=release.status if release else "not installed",
        pods=f"{state.pods_ready}/{state.pods_total}",
        registration=registration,
        detail=detail,
        access_url=site.access_url,
        reachable=reachable,
        service=service,
        zones=zones,
    )


async def _service_and_zones(
    engine: Engine, site: Primary | Region, state: SiteState
) -> tuple[str, str]:
    if state.release is None:
        return "-", "-"
    kube = engine.site_kube(site)
    if engine.topology.generation == "v2":
        name = str(site.values.get("nameOverride") or "coder")
        selector = f"app.kubernetes.io/instance={site.release}"
    else:
        name, selector = "coderd", "coder.deployment=coderd"
    address = await kube.service_address(site.namespace, name)
    by_zone = await kube.ready_by_zone(site.namespace, selector)
    zones = ", ".join(f"{zone} {ready}/{total}" for zone, (ready, total) in by_zone.items())
    return address or "-", zones or "-"


def _registration(
    engine: Engine, site: Primary | Region, state: SiteState, world: World
) -> tuple[str, str]:
    """(ok | unregistered | unreachable | unhealthy, detail) as the primary sees the site."""
    records = world.records
    if isinstance(site, Primary):
        if not records.reachable:
            return "unreachable", ""
        return "ok", f"Coder {records.version}"
    if engine.topology.generation == "v1":
        registered = records.satellites.get(site.name)
        if registered is None:
            return "unregistered", ""
        if state.satellite_key is None:
            return "unreachable", state.probe_error or "satellite not running"
        if state.satellite_key.fingerprint != registered.fingerprint:
            return "unhealthy", "served key differs from the registered one"
        return "ok", ""
    proxy = records.proxies.get(site.name)
    if proxy is None:
        return "unregistered", ""
    report = proxy.status.report
    return proxy.status.status, "; ".join([*report.errors, *report.warnings])
