"""Helm values for the primary and each region, rendered from ``coder_migrate/templates``.

Templates use StrictUndefined, so a missing inventory value fails the plan instead of
rendering an empty string into a live release. ``coder_values`` from the inventory is merged
over the rendered values (dicts recursively, everything else replaced).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import yaml

from coder_migrate.errors import PlanError
from coder_migrate.inventory import Primary, Region, Topology

__all__ = ["TokenSecret", "deep_merge", "release_values"]

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("coder_migrate", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - YAML, not HTML
    keep_trailing_newline=True,
)


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
    try:
        text = _ENVIRONMENT.get_template(name).render(
            site=site, primary=topology.primary, topology=topology,
            token_secret=token_secret or TokenSecret(),
        )
    except jinja2.TemplateError as error:
        raise PlanError(f"template {name} for {site.name}: {error}") from None
    rendered = yaml.safe_load(text) or {}
    if not isinstance(rendered, dict):
        raise PlanError(f"template {name} for {site.name} did not render a mapping")
    return deep_merge(rendered, site.values)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
