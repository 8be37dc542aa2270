"""Is a site healthy: the check behind every site's gate, and ``status``'s reachability.

A site is healthy when its release is deployed with every pod ready and the primary sees it
working: the primary answers its own API; a v1 satellite is registered, serves the key it
is registered with and answers ``/healthz``; a v2 workspace proxy is reported ``ok``.
"""

from __future__ import annotations

from coder_migrate.engine.change import Action, ApplyContext, Change, Gate
from coder_migrate.engine.world import Engine
from coder_migrate.errors import CoderAPIError
from coder_migrate.inventory import Primary, Region
from coder_migrate.providers.coder.health import health_url
from coder_migrate.providers.coder.probes import probe_url
from coder_migrate.providers.coder.transport import ASK_ONCE

__all__ = ["gate_unless_deleted", "site_gate", "site_problem"]


def site_gate(engine: Engine, site: Primary | Region) -> Gate:
    """The gate of *site*: one per site and wave, whichever of its changes asks for it."""
    return Gate(key=f"health/{site.name}", site=site.name,
                check=lambda: site_problem(engine, site))


def gate_unless_deleted(change: Change, ctx: ApplyContext) -> Gate | None:
    """The gate of the change's site, none for a deletion (the site is going away)."""
    if change.action is Action.DELETE:
        return None
    return site_gate(ctx.engine, ctx.site(change.region))


async def site_problem(engine: Engine, site: Primary | Region) -> str:
    """One health check of a site; "" when healthy."""
    helm = engine.site_helm(site)
    release = await helm.release(site.namespace, site.release)
    if release is None or release.status != "deployed":
        return f"release {site.release} is {release.status if release else 'not installed'}"
    pods = await engine.site_kube(site).pods(site.namespace)
    not_ready = [p.name for p in pods if not p.ready]
    if not pods or not_ready:
        return f"pods not ready: {', '.join(not_ready) or 'none running'}"
    if isinstance(site, Primary):
        return await _primary_problem(engine)
    if engine.topology.generation == "v1":
        return await _satellite_problem(engine, site)
    return await _proxy_problem(engine, site)


async def _primary_problem(engine: Engine) -> str:
    try:
        if engine.topology.generation == "v1":
            async with engine.coder_v1() as v1:
                await v1.version(refresh=True)
        else:
            async with engine.coder_v2() as v2:
                await v2.buildinfo()
    except CoderAPIError as error:
        return f"the primary does not answer: {error}"
    return ""


async def _satellite_problem(engine: Engine, region: Region) -> str:
    async with engine.coder_v1() as v1:
        registered = await v1.find_satellite(region.name)
        if registered is None:
            return "the satellite is not registered"
        try:
            # A gate polls (engine/apply.py): one try per check, no backoff inside it.
            served = await v1.fetch_satellite_key(region.access_url, retry=ASK_ONCE)
        except CoderAPIError as error:
            return f"the satellite does not serve its key: {error}"
    if served.fingerprint != registered.fingerprint:
        return "the satellite's key differs from its registration"
    url = health_url(region.access_url, "v1")
    ok, why = await probe_url(url)
    return "" if ok else f"{url}: {why}"


async def _proxy_problem(engine: Engine, region: Region) -> str:
    async with engine.coder_v2() as v2:
        proxy = await v2.find_proxy(region.name)
    if proxy is None:
        return "the workspace proxy is not on the primary"
    if proxy.status.status != "ok":
        errors = "; ".join(proxy.status.report.errors)
        return f"the primary reports the proxy {proxy.status.status}" + (
            f" ({errors})" if errors else ""
        )
    return ""
