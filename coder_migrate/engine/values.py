"""Helm values for the primary and each region, rendered from ``coder_migrate/templates``.

Templates use StrictUndefined, so a missing inventory value fails the plan instead of
rendering an empty string into a live release. ``coder_values`` from the inventory is merged
over the rendered values: mappings recursively; lists of named entries (``coder.env``,
``envFrom``, ``volumes``, ``volumeMounts``, ...) by name, a user entry replacing the rendered
one of the same name and the others appended; anything else replaced. Values coder-migrate
owns (the site's access URLs, the proxy token) come from the inventory's own keys:
``coder_values`` that would replace them is refused with one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import yaml

from coder_migrate.engine.infra import infra_values
from coder_migrate.errors import PlanError
from coder_migrate.inventory import Primary, Region, Topology

__all__ = ["TokenSecret", "deep_merge", "release_values", "render_values"]

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("coder_migrate", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - YAML, not HTML
    keep_trailing_newline=True,
)

# Env entries coder-migrate writes into coder.env, and where their values come from.
_OWNED_ENV = {
    "CODER_ACCESS_URL": "coder_access_url",
    "CODER_WILDCARD_ACCESS_URL": "coder_wildcard_host",
    "CODER_PROXY_SESSION_TOKEN": "the proxy token Secret coder-migrate writes",
}
# Values of the coder/coder v1 chart coder-migrate sets, and where they come from. (The
# primary's URL a satellite or proxy dials may be overridden: an in-cluster name, say; the
# inventory rules check it is not the geo-routed shared name.)
_OWNED_PATHS = {
    ("coderd", "satellite", "accessURL"): "coder_access_url",
    ("coderd", "devurlsHost"): "coder_wildcard_host",
}


@dataclass(frozen=True)
class TokenSecret:
    """Where a v2 workspace proxy's token lives in its region (never the token itself)."""

    name: str = "coder-workspace-proxy-token"
    key: str = "token"


def template_name(topology: Topology, site: Primary | Region) -> str:
    role = "primary" if isinstance(site, Primary) else (
        "satellite" if topology.generation == "v1" else "proxy"
    )
    return f"values/coder-{topology.generation}-{role}.yaml.j2"


def release_values(
    topology: Topology, site: Primary | Region, *, token_secret: TokenSecret | None = None
) -> dict[str, Any]:
    """The complete values of *site*'s Helm release."""
    name = template_name(topology, site)
    rendered = render_values(name, site.name, site=site, primary=topology.primary,
                             topology=topology, token_secret=token_secret or TokenSecret(),
                             provisioner_psk_secret=_psk_secret(topology))
    owned = owned_override(site.values)
    if owned:
        where, source = owned
        raise PlanError(
            f"{topology.source}: {site.name}: coder_values: {where} is set by coder-migrate "
            f"from {source}; change that instead (or remove it from coder_values)"
        )
    for piece in infra_values(topology, site):
        rendered = deep_merge(rendered, piece)
    return deep_merge(rendered, site.values)


def _psk_secret(topology: Topology) -> str:
    """The primary's ``provisionerDaemon.pskSecretName`` when any region has provisioners."""
    from coder_migrate.engine.provisioners import PSK_SECRET, provisioner_regions

    return PSK_SECRET if provisioner_regions(topology) else ""


def render_values(name: str, site_name: str, **context: Any) -> dict[str, Any]:
    """The values template *name* renders for the site *site_name*, as a mapping."""
    try:
        text = _ENVIRONMENT.get_template(name).render(**context)
    except jinja2.TemplateError as error:
        raise PlanError(f"template {name} for {site_name}: {error}") from None
    rendered = yaml.safe_load(text) or {}
    if not isinstance(rendered, dict):
        raise PlanError(f"template {name} for {site_name} did not render a mapping")
    return rendered


def owned_override(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first place *values* would replace a value coder-migrate owns: (where, its source)."""
    for path, source in _OWNED_PATHS.items():
        node: Any = values
        for step in path:
            node = node.get(step) if isinstance(node, Mapping) else None
        if node is not None:
            return ".".join(path), source
    for section in ("coder", "coderd"):
        entries = (values.get(section) or {}).get("env") if isinstance(values, Mapping) else None
        for entry in entries if isinstance(entries, list) else []:
            name = entry.get("name") if isinstance(entry, Mapping) else None
            if name in _OWNED_ENV:
                return f"{section}.env {name}", _OWNED_ENV[str(name)]
    return None


def _entry_key(entry: Any) -> tuple[str, ...] | None:
    """What names a list entry: its ``name``, or the Secret / ConfigMap an ``envFrom`` entry
    reads (with its prefix); None for anything else."""
    if not isinstance(entry, Mapping):
        return None
    if isinstance(entry.get("name"), str):
        return ("name", entry["name"])
    for kind in ("secretRef", "configMapRef"):
        reference = entry.get(kind)
        if isinstance(reference, Mapping) and isinstance(reference.get("name"), str):
            return (kind, reference["name"], str(entry.get("prefix") or ""))
    return None


def _merge_named(base: list[Any], override: list[Any]) -> list[Any] | None:
    """Both lists of named entries: merged by name; None when either is not."""
    keys = [_entry_key(entry) for entry in [*base, *override]]
    if not base or not override or any(key is None for key in keys):
        return None
    merged = list(base)
    positions = {_entry_key(entry): index for index, entry in enumerate(merged)}
    for entry in override:
        key = _entry_key(entry)
        if key in positions:
            merged[positions[key]] = entry
        else:
            positions[key] = len(merged)
            merged.append(entry)
    return merged


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value)
        elif isinstance(value, list) and isinstance(current, list):
            named = _merge_named(current, value)
            merged[key] = value if named is None else named
        else:
            merged[key] = value
    return merged
