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
  ``--force``;
- provisioners the inventory no longer asks for (their region removed, its coder_provisioners
  dropped or their release renamed): uninstalled, then the PSK Secret coder-migrate wrote
  deleted; with ``--force`` too.

Waves: the primary, then the canary region alone, then the other regions (the grouping the
migration shares: :func:`region_groups`), then removals, each removed region forgotten in the
sites record last.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from coder_migrate.engine.change import change_id
from coder_migrate.engine.infra import DATABASE_SECRET, V1_DATABASE_PATHS, service_shape
from coder_migrate.engine.kinds.database_secret import DatabaseDoc, DatabaseSecretChange
from coder_migrate.engine.kinds.namespace import NamespaceChange
from coder_migrate.engine.kinds.proxy import ProxyDoc, WorkspaceProxyChange
from coder_migrate.engine.kinds.proxy_token import ProxyTokenChange, TokenDoc
from coder_migrate.engine.kinds.registration import Registration, SatelliteRegistrationChange
from coder_migrate.engine.kinds.release import HelmReleaseChange, ReleaseDoc, protected_releases
from coder_migrate.engine.kinds.site_record import SiteRecordChange
from coder_migrate.engine.plan import SENSITIVE, Action, Change, Plan, Wave
from coder_migrate.engine.provisioner_plan import (
    primary_psk_changes,
    provisioner_removals,
    region_provisioner_changes,
)
from coder_migrate.engine.values import TokenSecret, release_values
from coder_migrate.engine.world import ManagedSite, SiteState, World
from coder_migrate.errors import PlanError
from coder_migrate.inventory import Primary, Region, Topology
from coder_migrate.providers.coder import CoderVersion
from coder_migrate.providers.coder.v1 import SATELLITE_MIN_VERSION
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
    "region_groups",
]

KIND_NAMESPACE = NamespaceChange.KIND
KIND_RELEASE = HelmReleaseChange.KIND
KIND_SATELLITE = SatelliteRegistrationChange.KIND
KIND_PROXY = WorkspaceProxyChange.KIND
KIND_PROXY_TOKEN = ProxyTokenChange.KIND
KIND_SITE_RECORD = SiteRecordChange.KIND


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


def _yaml_lines(document: ReleaseDoc | None) -> list[str]:
    if document is None:
        return []
    return yaml.safe_dump(document.model_dump(mode="json"), sort_keys=True,
                          default_flow_style=False).splitlines()


def values_diff(before: ReleaseDoc | None, after: ReleaseDoc | None) -> str:
    return "\n".join(
        difflib.unified_diff(
            _yaml_lines(before), _yaml_lines(after), "observed", "planned", lineterm="", n=2
        )
    )


def check_limit(topology: Topology, world_managed: Iterable[str], limit: Sequence[str]) -> None:
    known = {topology.primary.name, *(r.name for r in topology.regions), *world_managed}
    unknown = [name for name in limit if name not in known]
    if unknown:
        raise PlanError(
            f"--limit names {', '.join(unknown)}, which is neither the primary nor a region of "
            f"{topology.source} (regions: {', '.join(r.name for r in topology.regions)})"
        )


def _where(site: Primary | Region | ManagedSite) -> str:
    return f"ns {site.namespace} of {site.kube_context}"


def _namespace_change(site: Primary | Region, state: SiteState) -> Change | None:
    return None if state.namespace_exists else NamespaceChange.create(site)


def _release_change(
    topology: Topology, site: Primary | Region, state: SiteState, source: ChartSource,
    token_secret: TokenSecret, depends_on: tuple[str, ...],
) -> Change | None:
    desired_chart = f"{source.name}-{source.version}"
    raw_desired = _normalised(release_values(topology, site, token_secret=token_secret))
    desired = _hide_database(shown_values(raw_desired))
    after = ReleaseDoc(chart=desired_chart, values=desired)
    target = f"helm release {site.release} ({source.describe()}) in {_where(site)}"
    release_id = change_id(site.name, KIND_RELEASE, site.release)
    release = state.release
    shape = service_shape(topology, site)
    shape = f"; load balancer {shape}" if shape else ""
    if release is None:
        return HelmReleaseChange(
            id=release_id, region=site.name, action=Action.CREATE,
            target=target, reason="not installed" + shape, after=after,
            diff=values_diff(None, after),
            depends_on=depends_on,
        )
    before = ReleaseDoc(chart=release.chart, values=_hide_database(shown_values(release.values)))
    reasons = []
    if release.pending:
        reasons.append(
            f"release is {release.status} (an interrupted helm run); apply recovers it first"
        )
    elif release.status != "deployed":
        reasons.append(f"release is {release.status}")
    if release.chart != desired_chart:
        reasons.append(f"chart {release.chart} -> {desired_chart}")
    if before.values != desired:
        reasons.append("values differ")
    elif _normalised(release.values) != raw_desired:
        # Only values shown as (sensitive) changed: the plan says so without showing them.
        reasons.append("sensitive values differ")
    if not reasons:
        return None
    return HelmReleaseChange(
        id=release_id, region=site.name, action=Action.UPDATE, target=target,
        reason="; ".join(reasons) + shape, before=before, after=after,
        diff=values_diff(before, after),
        depends_on=depends_on,
    )


def _hide_database(values: dict[str, Any]) -> dict[str, Any]:
    """v1 values of an external database (host, port, user, database name: derived from
    coder_database) as ``(sensitive)``: a plan never shows any part of the database URL."""
    shown = dict(values)
    postgres = shown.get("postgres")
    if isinstance(postgres, dict) and "passwordSecret" in postgres:
        postgres = dict(postgres)
        for _, key in V1_DATABASE_PATHS:
            if key in postgres:
                postgres[key] = SENSITIVE
        shown["postgres"] = postgres
    return shown


def _database_change(site: Primary | Region, state: SiteState,
                     depends_on: tuple[str, ...]) -> Change | None:
    if not isinstance(site, Primary) or site.database is None:
        return None
    if state.database_stored == "current":
        return None
    reference = site.database.url.describe()
    common = {
        "id": change_id(site.name, DatabaseSecretChange.KIND, DATABASE_SECRET),
        "region": site.name, "target": f"Secret {DATABASE_SECRET} in {_where(site)}",
        "after": DatabaseDoc(reference=reference, value=SENSITIVE), "depends_on": depends_on,
    }
    if state.database_stored == "differs":
        return DatabaseSecretChange(
            **common, action=Action.UPDATE,
            before=DatabaseDoc(reference=reference, value=SENSITIVE),
            reason=f"its value differs from coder_database.url ({reference}); the primary's "
                   "pods restart to read it",
        )
    return DatabaseSecretChange(
        **common, action=Action.CREATE,
        reason=f"not there; written from coder_database.url ({reference}), never shown",
    )


def _satellite_change(
    region: Region, state: SiteState, world: World, release: Change | None
) -> Change | None:
    version = CoderVersion.parse(world.records.version)
    if world.records.reachable and version.known_older_than(*SATELLITE_MIN_VERSION):
        raise PlanError(
            f"{region.name}: a satellite needs Coder 1.21 or newer on the primary, which runs "
            f"{version.raw}: upgrade the primary to 1.21 first (apply --limit with the "
            "primary's host only)"
        )
    registered = world.records.satellites.get(region.name)
    common = {
        "id": change_id(region.name, KIND_SATELLITE, region.name), "region": region.name,
        "target": f"satellite registration {region.name} on the primary",
        "depends_on": (release.id,) if release is not None else (),
    }
    fetched = Registration(name=region.name, access_url=region.access_url)
    if registered is None:
        return SatelliteRegistrationChange(
            **common, action=Action.CREATE, after=fetched,
            reason=(
                f"not registered; apply fetches the key from {region.access_url} "
                "/api/private/satellites/key, checks its fingerprint and registers it"
            ),
        )
    before = Registration(name=registered.name, fingerprint=registered.fingerprint)
    if release is not None and release.action is Action.CREATE:
        return SatelliteRegistrationChange(
            **common, action=Action.UPDATE, before=before, after=fetched,
            reason="the satellite is (re)installed with a new key; re-register it after",
        )
    served = state.satellite_key
    if served is not None and served.fingerprint != registered.fingerprint:
        return SatelliteRegistrationChange(
            **common, action=Action.UPDATE, before=before,
            after=Registration(name=region.name, fingerprint=served.fingerprint),
            reason=(
                f"the satellite serves key {served.fingerprint[:16]}..., registered is "
                f"{registered.fingerprint[:16]}...; re-register"
            ),
        )
    return None


def _proxy_changes(
    region: Region, state: SiteState, world: World, namespace: Change | None,
    token_secret: TokenSecret,
) -> list[Change]:
    proxy = world.records.proxies.get(region.name)
    depends = (namespace.id,) if namespace is not None else ()
    secret = f"Secret {token_secret.name} in {_where(region)}"
    proxy_id = change_id(region.name, KIND_PROXY, region.name)
    target = f"workspace proxy {region.name} on the primary"
    if proxy is None:
        return [WorkspaceProxyChange(
            id=proxy_id, region=region.name, action=Action.CREATE, target=target,
            reason=f"not on the primary; its one-time token goes straight into {secret}",
            after=ProxyDoc(name=region.name, display_name=region.display_name,
                           icon=region.icon, token=SENSITIVE, token_secret=token_secret.name),
            depends_on=depends,
        )]
    changes: list[Change] = []
    if (proxy.display_name, proxy.icon_url) != (region.display_name, region.icon):
        changes.append(WorkspaceProxyChange(
            id=proxy_id, region=region.name, action=Action.UPDATE, target=target,
            reason=f"display name {proxy.display_name!r} -> {region.display_name!r}, "
                   f"icon {proxy.icon_url!r} -> {region.icon!r}",
            before=ProxyDoc(display_name=proxy.display_name, icon=proxy.icon_url),
            after=ProxyDoc(display_name=region.display_name, icon=region.icon),
        ))
    if not state.token_secret:
        changes.append(ProxyTokenChange(
            id=change_id(region.name, KIND_PROXY_TOKEN, token_secret.name), region=region.name,
            action=Action.ACT, target=secret,
            reason=(
                "the proxy exists but its token Secret is missing: regenerate the token "
                "(regenerate_token) into it; no second proxy is created"
            ),
            after=TokenDoc(token=SENSITIVE), depends_on=depends,
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
        before_release = _proxy_changes(site, state, world, namespace, token_secret)
        changes.extend(before_release)
    elif isinstance(site, Primary):
        before_release = primary_psk_changes(topology, world.provisioners)
        changes.extend(before_release)
    database = _database_change(
        site, state, (namespace.id,) if namespace is not None else ())
    if database is not None:
        before_release.append(database)
        changes.append(database)
    depends = tuple(c.id for c in (namespace, *before_release) if c is not None)
    release = _release_change(topology, site, state, source, token_secret, depends)
    if release is not None:
        changes.append(release)
    if isinstance(site, Region):
        changes.extend(region_provisioner_changes(
            topology, world.provisioners, site,
            tuple(c.id for c in (namespace, release) if c is not None)))
    if isinstance(site, Region) and topology.generation == "v1":
        registration = _satellite_change(site, state, world, release)
        if registration is not None:
            changes.append(registration)
    return changes


def _removal_changes(site: ManagedSite, world: World, token_secret: TokenSecret) -> list[Change]:
    where = _where(site)
    # Its provisioners first: they are the region's too, found through the same record.
    provisioners = provisioner_removals(world.provisioner_leftovers.get(site.name))
    release = HelmReleaseChange(
        id=change_id(site.name, KIND_RELEASE, site.release), region=site.name,
        action=Action.DELETE, target=f"helm release {site.release} in {where}",
        reason="the region is no longer in the inventory", needs_force=True, before=site,
    )
    changes: list[Change] = []
    if site.generation == "v1":
        registered = world.records.satellites.get(site.name)
        if registered is not None:
            changes.append(SatelliteRegistrationChange(
                id=change_id(site.name, KIND_SATELLITE, site.name), region=site.name,
                action=Action.DELETE, target=f"satellite registration {site.name} on the primary",
                reason="deregister before uninstalling", needs_force=True,
                before=Registration(name=registered.name, fingerprint=registered.fingerprint),
            ))
        changes.append(release)
    else:
        changes.append(release)
        if site.name in world.records.proxies:
            changes.append(WorkspaceProxyChange(
                id=change_id(site.name, KIND_PROXY, site.name), region=site.name,
                action=Action.DELETE, target=f"workspace proxy {site.name} on the primary",
                reason="uninstalled first, then deleted on the primary", needs_force=True,
                before=ProxyDoc(name=site.name), depends_on=(release.id,),
            ))
        changes.append(ProxyTokenChange(
            id=change_id(site.name, KIND_PROXY_TOKEN, token_secret.name), region=site.name,
            action=Action.DELETE, target=f"Secret {token_secret.name} in {where}",
            reason="the token of a deleted proxy is not left behind", needs_force=True,
            before=TokenDoc(token=SENSITIVE), where=site, depends_on=(release.id,),
        ))
    changes = [*provisioners, *changes]
    return [*changes, SiteRecordChange.forget(site, depends_on=(changes[-1].id,))]


def _base(topology: Topology) -> Path | None:
    return Path(topology.source) if topology.source else None


def region_groups(topology: Topology) -> list[tuple[str, list[Region]]]:
    """The regions' waves, named: the canary alone first, then every other region. Deploy
    and the migration roll out in these groups."""
    canary = topology.canary
    groups: list[tuple[str, list[Region]]] = []
    if canary is not None:
        groups.append((f"canary {canary.name}", [canary]))
    groups.append(("regions", [r for r in topology.regions
                               if canary is None or r.name != canary.name]))
    return groups


def _check_tls(world: World, included: Callable[[str], bool]) -> None:
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


def _removals_wave(
    topology: Topology, world: World, included: Callable[[str], bool], token_secret: TokenSecret
) -> Wave:
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
    # Regions that stay but no longer ask for (these) provisioners: the same removals.
    dropped = [name for name in sorted(world.provisioner_leftovers)
               if name in in_inventory and included(name)]
    removals += [change for name in dropped
                 for change in provisioner_removals(world.provisioner_leftovers[name])]
    return Wave(name="removals", regions=(*(m.name for m in removed), *dropped),
                changes=tuple(removals))


def _unmanaged_notes(topology: Topology, world: World) -> list[str]:
    known = {r.name for r in topology.regions} | set(world.managed)
    registered = set(world.records.satellites) | set(world.records.proxies)
    what = "satellite" if topology.generation == "v1" else "workspace proxy"
    return [
        f"{what} {name} is registered on the primary but not in the inventory and was "
        "not deployed by coder-migrate: left alone"
        for name in sorted(registered - known)
    ]


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

    _check_tls(world, included)
    notes: list[str] = []
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

    waves = [site_wave("primary", [topology.primary])]
    waves += [site_wave(name, regions) for name, regions in region_groups(topology)]
    waves.append(_removals_wave(topology, world, included, token_secret))
    notes += _unmanaged_notes(topology, world)
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
