"""``coder-migrate inventory``: validate and show an inventory, and print what is generated
from its model (the role's argument spec, docs/inventory.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from coder_migrate import sensitive
from coder_migrate.cli.console import console
from coder_migrate.cli.options import examples, inventory_option, output_option
from coder_migrate.inventory import Topology, load_topology


@click.group(epilog=examples(
    "coder-migrate inventory validate -i inventories/prod",
    "coder-migrate inventory show -i inventories/prod --output json",
))
def inventory() -> None:
    """Validate and show an inventory (hosts.yml or INI hosts, group_vars/, host_vars/);
    every key is in docs/inventory.md."""


@inventory.command(epilog=examples(
    "coder-migrate inventory validate -i inventories/prod",
    "coder-migrate inventory validate -i inventories/prod --vault-password-file ~/.vault-pass",
))
@inventory_option
def validate(inventory_dir: Path) -> None:
    """Check every rule; print one line per problem and exit 3 if any. Reads no secret and
    touches nothing."""
    topology = load_topology(inventory_dir)
    console.print(
        f"{topology.source}: valid ({topology.generation} {topology.version}, "
        f"primary {topology.primary.name} and {len(topology.regions)} region(s))",
        markup=False,
    )


@inventory.command(epilog=examples(
    "coder-migrate inventory show -i inventories/prod",
    "coder-migrate inventory show -i inventories/prod --output json | jq '.regions[].name'",
))
@inventory_option
@output_option
def show(inventory_dir: Path, output: str) -> None:
    """Show the primary and every region as a table, or as JSON; Helm values under
    sensitive-looking keys are masked as in plans."""
    topology = load_topology(inventory_dir)
    if output == "json":
        click.echo(json.dumps(shown(topology), indent=2))
        return
    console.print(_table(topology))


def shown(topology: Topology) -> dict[str, Any]:
    """The topology as ``inventory show --output json`` prints it: secret references as they
    are (names of variables and files), ``!vault`` text and sensitive Helm values masked."""
    data: dict[str, Any] = topology.model_dump(mode="json")
    for site in (data.get("primary", {}), *data["regions"]):  # Topology's fields
        site["values"] = sensitive.mask(site["values"])

    def hide_vault(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("vault"):
                node["vault"] = "(encrypted)"
            for child in node.values():
                hide_vault(child)

    hide_vault(data)
    return data


def _table(topology: Topology) -> Table:
    kind = "satellite" if topology.generation == "v1" else "workspace proxy"
    table = Table(
        title=escape(
            f"{topology.source}: Coder {topology.generation} {topology.version}, "
            f"{topology.dns.shared_hostname} via {topology.dns.provider}"
        ),
        title_justify="left",
    )
    for column in ("region", "role", "access URL / wildcard", "kube context / namespace",
                   "DNS targets", "geo"):
        table.add_column(column, overflow="fold")

    def two(first: str, second: str) -> str:
        return f"{escape(first)}\n[dim]{escape(second)}[/]"

    primary = topology.primary
    table.add_row(
        escape(primary.name), "primary", two(primary.access_url, primary.wildcard_host or "-"),
        two(primary.kube_context, primary.namespace),
        escape("\n".join(primary.dns_targets) or "-"), "fallback",
    )
    canary = topology.canary
    for region in topology.regions:
        geo = region.geo
        where = ", ".join([*geo.continents, *geo.countries, *geo.subnets]) or "-"
        role = kind + (" (canary)" if canary is not None and region.name == canary.name else "")
        table.add_row(
            two(region.name, region.display_name), role,
            two(region.access_url, region.wildcard_host or "-"),
            two(region.kube_context, region.namespace),
            escape("\n".join(region.dns_targets) or "-"), escape(where),
        )
    return table


@inventory.command("argument-spec", epilog=examples(
    "coder-migrate inventory argument-spec > roles/inventory_validate/meta/argument_specs.yml",
))
def argument_spec_command() -> None:
    """Print the inventory_validate role's meta/argument_specs.yml, generated from the model."""
    from coder_migrate.inventory.argspec import argument_spec_yaml

    click.echo(argument_spec_yaml(), nl=False)


@inventory.command("reference", epilog=examples(
    "coder-migrate inventory reference > docs/inventory.md",
))
def reference_command() -> None:
    """Print docs/inventory.md: every inventory key and sub-key, generated from the model."""
    from coder_migrate.inventory.reference import reference_markdown

    click.echo(reference_markdown(), nl=False)
