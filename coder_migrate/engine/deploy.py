"""The deploy plan: the inventory compared with the observed world, as ordered changes.

Pure functions of (:class:`Topology`, :class:`World`), so every rule is unit-tested without a
cluster. Per site, in order:

- primary: its namespace, then the Coder Helm release;
- v1 region: namespace, the satellite release, then its registration with the primary
  (the key is fetched from the running satellite at apply time and its fingerprint checked);
- v2 region: namespace, the workspace proxy on the primary with its one-time token written
  straight into a Secret (a lost token is regenerated, never a second proxy), then the proxy
  release that reads the token through ``secretKeyRef``;
- a region coder-migrate deployed that is no longer in the inventory: deregistered and
  uninstalled (v1), or uninstalled, deleted and its token Secret removed (v2); these need
  ``--force``.

Waves: the primary, then the canary region alone, then the other regions, then removals.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from coder_migrate.engine.plan import SENSITIVE, Action, Change, Plan, Wave
from coder_migrate.engine.values import TokenSecret, release_values
from coder_migrate.engine.world import ManagedSite, SiteState, World
from coder_migrate.errors import PlanError
from coder_migrate.inventory import Primary, Region, Topology
from coder_migrate.providers.helm import ChartSource, chart_source, local_chart_version
from coder_migrate.sensitive import mask

__all__ = [
    "KIND_NAMESPACE",
    "KIND_PROXY",
    "KIND_PROXY_TOKEN",
    "KIND_RELEASE",
    "KIND_SATELLITE",
    "check_limit",
    "deploy_waves",
    "mask_sensitive",
    "plan_deploy",
    "protected_releases",
]

KIND_NAMESPACE = "Namespace"
KIND_RELEASE = "HelmRelease"
KIND_SATELLITE = "SatelliteRegistration"
KIND_PROXY = "WorkspaceProxy"
KIND_PROXY_TOKEN = "ProxyToken"  # noqa: S105 - a change kind, not a token

def mask_sensitive(value: Any, key: str = "") -> Any:
    """Values as they may be shown (:func:`coder_migrate.sensitive.mask`: the one rule for
    plans and ``inventory show``)."""
    return mask(value, key)


def _normalised(values: dict[str, Any]) -> dict[str, Any]:
    normalised: dict[str, Any] = json.loads(json.dumps(values, sort_keys=True, default=str))
    return normalised


def shown_values(values: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = mask(_normalised(values))
    return shown


def _release_doc(chart: str, values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {"chart": chart, "values": values}


def _yaml_lines(document: dict[str, Any] | None) -> list[str]:
    if document is None:
        return []
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False).splitlines()


def values_diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    return "\n".join(
        difflib.unified_diff(
            _yaml_lines(before), _yaml_lines(after), "observed", "planned", lineterm="", n=2
        )
    )


def check_limit(topology: Topology, world_managed: Iterable[str], limit: Sequence[str]) -> None:
    known = {"primary", *(r.name for r in topology.regions), *world_managed}
    unknown = [name for name in limit if name not in known]
    if unknown:
        raise PlanError(
            f"--limit names {', '.join(unknown)}, which is neither the primary nor a region of "
            f"{topology.source} (regions: {', '.join(r.name for r in topology.regions)})"
        )


def _where(site: Primary | Region | ManagedSite) -> str:
    return f"ns {site.namespace} of {site.kube_context}"


def _namespace_change(site: Primary | Region, state: SiteState) -> Change | None:
    if state.namespace_exists:
        return None
    return Change(
        id=f"{site.name}/{KIND_NAMESPACE}/{site.namespace}",
        region=site.name, kind=KIND_NAMESPACE, action=Action.CREATE,
        target=f"namespace {site.namespace} in {site.kube_context}",
        reason="it does not exist",
        after={"context": site.kube_context, "namespace": site.namespace},
    )


def _release_change(
    topology: Topology, site: Primary | Region, state: SiteState, source: ChartSource,
    token_secret: TokenSecret, depends_on: tuple[str, ...],
) -> Change | None:
    desired_chart = f"{source.name}-{source.version}"
    raw_desired = _normalised(release_values(topology, site, token_secret=token_secret))
    desired = shown_values(raw_desired)
    after = _release_doc(desired_chart, desired)
    target = f"helm release {site.release} ({source.describe()}) in {_where(site)}"
    change_id = f"{site.name}/{KIND_RELEASE}/{site.release}"
    release = state.release
    if release is None:
        return Change(
            id=change_id, region=site.name, kind=KIND_RELEASE, action=Action.CREATE,
            target=target, reason="not installed", after=after, diff=values_diff(None, after),
            depends_on=depends_on,
        )
    before = _release_doc(release.chart, shown_values(release.values))
    reasons = []
    if release.pending:
        reasons.append(
            f"release is {release.status} (an interrupted helm run); apply recovers it first"
        )
    elif release.status != "deployed":
        reasons.append(f"release is {release.status}")
    if release.chart != desired_chart:
        reasons.append(f"chart {release.chart} -> {desired_chart}")
    if before is not None and before["values"] != desired:
        reasons.append("values differ")
    elif _normalised(release.values) != raw_desired:
        # Only values shown as (sensitive) changed: the plan says so without showing them.
        reasons.append("sensitive values differ")
    if not reasons:
        return None
    return Change(
        id=change_id, region=site.name, kind=KIND_RELEASE, action=Action.UPDATE, target=target,
        reason="; ".join(reasons), before=before, after=after, diff=values_diff(before, after),
        depends_on=depends_on,
    )


def _satellite_change(
    region: Region, state: SiteState, world: World, release: Change | None
) -> Change | None:
    registered = world.records.satellites.get(region.name)
    change_id = f"{region.name}/{KIND_SATELLITE}/{region.name}"
    target = f"satellite registration {region.name} on the primary"
    depends = (release.id,) if release is not None else ()
    if registered is None:
        return Change(
            id=change_id, region=region.name, kind=KIND_SATELLITE, action=Action.CREATE,
            target=target,
            reason=(
                f"not registered; apply fetches the key from {region.access_url} "
                "/api/private/satellites/key, checks its fingerprint and registers it"
            ),
            after={"name": region.name, "access_url": region.access_url}, depends_on=depends,
        )
    before = {"name": registered.name, "fingerprint": registered.fingerprint}
    if release is not None and release.action is Action.CREATE:
        return Change(
            id=change_id, region=region.name, kind=KIND_SATELLITE, action=Action.UPDATE,
            target=target,
            reason="the satellite is (re)installed with a new key; re-register it after",
            before=before, after={"name": region.name, "access_url": region.access_url},
            depends_on=depends,
        )
    served = state.satellite_key
    if served is not None and served.fingerprint != registered.fingerprint:
        return Change(
            id=change_id, region=region.name, kind=KIND_SATELLITE, action=Action.UPDATE,
            target=target,
            reason=(
                f"the satellite serves key {served.fingerprint[:16]}..., registered is "
                f"{registered.fingerprint[:16]}...; re-register"
            ),
            before=before, after={"name": region.name, "fingerprint": served.fingerprint},
            depends_on=depends,
        )
    return None


def _proxy_changes(
    topology: Topology, region: Region, state: SiteState, world: World,
    namespace: Change | None, token_secret: TokenSecret,
) -> list[Change]:
    proxy = world.records.proxies.get(region.name)
    depends = (namespace.id,) if namespace is not None else ()
    secret = f"Secret {token_secret.name} in {_where(region)}"
    if proxy is None:
        return [Change(
            id=f"{region.name}/{KIND_PROXY}/{region.name}", region=region.name, kind=KIND_PROXY,
            action=Action.CREATE,
            target=f"workspace proxy {region.name} on the primary",
            reason=f"not on the primary; its one-time token goes straight into {secret}",
            after={"name": region.name, "display_name": region.display_name, "icon": region.icon,
                   "token": SENSITIVE, "token_secret": token_secret.name},
            depends_on=depends,
        )]
    changes = []
    if (proxy.display_name, proxy.icon_url) != (region.display_name, region.icon):
        changes.append(Change(
            id=f"{region.name}/{KIND_PROXY}/{region.name}", region=region.name, kind=KIND_PROXY,
            action=Action.UPDATE, target=f"workspace proxy {region.name} on the primary",
            reason=f"display name {proxy.display_name!r} -> {region.display_name!r}, "
                   f"icon {proxy.icon_url!r} -> {region.icon!r}",
            before={"display_name": proxy.display_name, "icon": proxy.icon_url},
            after={"display_name": region.display_name, "icon": region.icon},
        ))
    if not state.token_secret:
        changes.append(Change(
            id=f"{region.name}/{KIND_PROXY_TOKEN}/{token_secret.name}", region=region.name,
            kind=KIND_PROXY_TOKEN, action=Action.ACT, target=secret,
            reason=(
                "the proxy exists but its token Secret is missing: regenerate the token "
                "(regenerate_token) into it; no second proxy is created"
            ),
            after={"token": SENSITIVE}, depends_on=depends,
        ))
    return changes


def _site_changes(
    topology: Topology, site: Primary | Region, state: SiteState, world: World,
    token_secret: TokenSecret,
) -> list[Change]:
    source = chart_source(topology.chart_for(site), _base(topology))
    local_version = local_chart_version(source)
    if local_version is not None and local_version != source.version:
        raise PlanError(
            f"{site.name}: chart {source.ref} is version {local_version}, "
            f"the inventory asks for {source.version}"
        )
    changes: list[Change] = []
    namespace = _namespace_change(site, state)
    if namespace is not None:
        changes.append(namespace)
    before_release: list[Change] = []
    if isinstance(site, Region) and topology.generation == "v2":
        before_release = _proxy_changes(topology, site, state, world, namespace, token_secret)
        changes.extend(before_release)
    depends = tuple(c.id for c in (namespace, *before_release) if c is not None)
    release = _release_change(topology, site, state, source, token_secret, depends)
    if release is not None:
        changes.append(release)
    if isinstance(site, Region) and topology.generation == "v1":
        registration = _satellite_change(site, state, world, release)
        if registration is not None:
            changes.append(registration)
    return changes


def protected_releases(topology: Topology) -> set[tuple[str, str, str]]:
    """(kube context, namespace, release) of every old workspace-provider release: never
    uninstalled by any code path."""
    return {
        (region.kube_context, provider.namespace, provider.release)
        for region in topology.regions
        for provider in region.workspace_providers
    }


def _removal_changes(site: ManagedSite, world: World, token_secret: TokenSecret) -> list[Change]:
    where = _where(site)
    release = Change(
        id=f"{site.name}/{KIND_RELEASE}/{site.release}", region=site.name, kind=KIND_RELEASE,
        action=Action.DELETE, target=f"helm release {site.release} in {where}",
        reason="the region is no longer in the inventory", needs_force=True,
        before=site.model_dump(mode="json"),
    )
    if site.generation == "v1":
        changes = []
        registered = world.records.satellites.get(site.name)
        if registered is not None:
            changes.append(Change(
                id=f"{site.name}/{KIND_SATELLITE}/{site.name}", region=site.name,
                kind=KIND_SATELLITE, action=Action.DELETE,
                target=f"satellite registration {site.name} on the primary",
                reason="deregister before uninstalling", needs_force=True,
                before={"name": registered.name, "fingerprint": registered.fingerprint},
            ))
        return [*changes, release]
    changes = [release]
    if site.name in world.records.proxies:
        changes.append(Change(
            id=f"{site.name}/{KIND_PROXY}/{site.name}", region=site.name, kind=KIND_PROXY,
            action=Action.DELETE, target=f"workspace proxy {site.name} on the primary",
            reason="uninstalled first, then deleted on the primary", needs_force=True,
            before={"name": site.name}, depends_on=(release.id,),
        ))
    changes.append(Change(
        id=f"{site.name}/{KIND_PROXY_TOKEN}/{token_secret.name}", region=site.name,
        kind=KIND_PROXY_TOKEN, action=Action.DELETE,
        target=f"Secret {token_secret.name} in {where}",
        reason="the token of a deleted proxy is not left behind", needs_force=True,
        before={"token": SENSITIVE}, depends_on=(release.id,),
    ))
    return changes


def _base(topology: Topology) -> Path | None:
    return Path(topology.source) if topology.source else None


def deploy_waves(
    topology: Topology, world: World, *, limit: Sequence[str] = (),
    token_secret: TokenSecret | None = None,
) -> tuple[list[Wave], list[str]]:
    """The deploy changes in waves, and the notes the reader must see."""
    token_secret = token_secret or TokenSecret()
    check_limit(topology, world.managed, limit)
    wanted = set(limit)

    def included(name: str) -> bool:
        return not wanted or name in wanted

    notes: list[str] = []
    problems = [
        f"{name}: {problem}"
        for name, state in world.sites.items() if included(name)
        for problem in state.tls_problems
    ]
    if problems:
        raise PlanError(
            "TLS secrets must exist with tls.crt and tls.key before anything is installed: "
            + "; ".join(problems)
        )
    if not world.records.reachable:
        notes.append(
            "the primary does not answer yet (its release is not installed): registrations "
            "are planned as new"
        )

    def site_wave(name: str, sites: Sequence[Primary | Region]) -> Wave:
        changes = [
            change
            for site in sites if included(site.name)
            for change in _site_changes(topology, site, world.sites[site.name], world, token_secret)
        ]
        return Wave(name=name, regions=tuple(s.name for s in sites), changes=tuple(changes))

    canary = topology.canary
    rest = [r for r in topology.regions if canary is None or r.name != canary.name]
    waves = [site_wave("primary", [topology.primary])]
    if canary is not None:
        waves.append(site_wave(f"canary {canary.name}", [canary]))
    waves.append(site_wave("regions", rest))

    in_inventory = {r.name for r in topology.regions}
    removed = [m for name, m in sorted(world.managed.items()) if name not in in_inventory]
    kept = protected_releases(topology)
    for site in removed:
        if (site.kube_context, site.namespace, site.release) in kept:
            raise PlanError(
                f"{site.name}: the sites record names helm release {site.release} in "
                f"{_where(site)}, which is a workspace-provider release kept for rollback; "
                "it is never uninstalled (fix the coder-migrate-sites ConfigMap)"
            )
    removals = [
        change for site in removed if included(site.name)
        for change in _removal_changes(site, world, token_secret)
    ]
    waves.append(Wave(name="removals", regions=tuple(m.name for m in removed),
                      changes=tuple(removals)))

    known = in_inventory | set(world.managed)
    registered = set(world.records.satellites) | set(world.records.proxies)
    for name in sorted(registered - known):
        what = "satellite" if topology.generation == "v1" else "workspace proxy"
        notes.append(
            f"{what} {name} is registered on the primary but not in the inventory and was "
            "not deployed by coder-migrate: left alone"
        )
    return [w for w in waves if w.changes], notes


def plan_deploy(
    topology: Topology, world: World, *, limit: Sequence[str] = (),
    extra_waves: Iterable[Wave] = (), extra_notes: Iterable[str] = (),
) -> Plan:
    waves, notes = deploy_waves(topology, world, limit=limit)
    return Plan.build(
        inventory=topology.source, waves=[*waves, *extra_waves], limit=limit,
        notes=[*notes, *extra_notes],
    )
