"""``coder-migrate inventory``: validate and show an inventory."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from coder_migrate.cli.console import console
from coder_migrate.cli.options import inventory_option, output_option
from coder_migrate.inventory import Topology, load_topology


@click.group()
def inventory() -> None:
    """Validate and show an inventory (hosts.yml + group_vars/)."""


@inventory.command()
@inventory_option
def validate(inventory_dir: Path) -> None:
    """Check every rule; print one line per problem and exit non-zero if any."""
    topology = load_topology(inventory_dir)
    console.print(
        f"{inventory_dir}: valid ({topology.generation} {topology.version}, "
        f"primary and {len(topology.regions)} region(s))"
    )


@inventory.command()
@inventory_option
@output_option
def show(inventory_dir: Path, output: str) -> None:
    """Show the primary and every region as a table, or as JSON."""
    topology = load_topology(inventory_dir)
    if output == "json":
        console.print_json(json.dumps(topology.model_dump(mode="json")))
        return
    console.print(_table(topology))


def _table(topology: Topology) -> Table:
    kind = "satellite" if topology.generation == "v1" else "workspace proxy"
    table = Table(
        title=(
            f"{topology.source}: Coder {topology.generation} {topology.version}, "
            f"{topology.dns.shared_hostname} via {topology.dns.provider}"
        ),
        title_justify="left",
    )
    for column in ("region", "role", "access URL / wildcard", "kube context / namespace",
                   "DNS targets", "geo"):
        table.add_column(column, overflow="fold")
    primary = topology.primary
    table.add_row(
        primary.name, "primary", f"{primary.access_url}\n[dim]{primary.wildcard_host or '-'}[/]",
        f"{primary.kube_context}\n[dim]{primary.namespace}[/]",
        "\n".join(primary.dns_targets) or "-", "fallback",
    )
    canary = topology.canary
    for region in topology.regions:
        geo = region.geo
        where = ", ".join([*geo.continents, *geo.countries, *geo.subnets]) or "-"
        role = kind + (" (canary)" if canary is not None and region.name == canary.name else "")
        table.add_row(
            f"{region.name}\n[dim]{region.display_name}[/]", role,
            f"{region.access_url}\n[dim]{region.wildcard_host or '-'}[/]",
            f"{region.kube_context}\n[dim]{region.namespace}[/]",
            "\n".join(region.dns_targets) or "-", where,
        )
    return table


@inventory.command("argument-spec", hidden=True)
def argument_spec_command() -> None:
    """Print the inventory_validate role's meta/argument_specs.yml, generated from the model."""
    from coder_migrate.inventory.argspec import argument_spec_yaml

    click.echo(argument_spec_yaml(), nl=False)
