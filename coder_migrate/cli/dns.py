"""``coder-migrate dns``: check that every region's clients get that region's answers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from coder_migrate.cli.console import console
from coder_migrate.cli.options import examples, inventory_option, limit_option, output_option
from coder_migrate.dns.check import CheckReport, check_dns, parse_geo_clients
from coder_migrate.inventory import load_topology


@click.group("dns", epilog=examples("coder-migrate dns check -i inventories/lab"))
def dns() -> None:
    """GeoDNS: verify the answers of the authoritative servers (see docs/dns.md)."""


@dns.command("check", epilog=examples(
    "coder-migrate dns check -i inventories/lab",
    "coder-migrate dns check -i inventories/prod --limit eu-west --wait 60",
    "coder-migrate dns check -i inventories/prod --server 192.0.2.53:53 --output json",
))
@inventory_option
@limit_option
@output_option
@click.option(
    "--server",
    "servers",
    multiple=True,
    metavar="HOST:PORT",
    help="Authoritative server to ask (repeatable); default: coder_dns.powerdns.nameservers, "
    "or coder_dns.rfc2136.server.",
)
@click.option(
    "--expect-down",
    multiple=True,
    metavar="REGION",
    help="This region's health endpoint is known down: expect its clients to get the "
    "fallback (the primary) for the shared hostname (repeatable).",
)
@click.option(
    "--geo-client",
    "geo_clients",
    multiple=True,
    metavar="COUNTRY=SUBNET",
    help="A client subnet the server's GeoIP database places in COUNTRY: expect the first "
    "region listing COUNTRY in coder_geo.countries (repeatable; needs a GeoIP database).",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 600),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Re-ask wrong answers until they are right or this many seconds have passed "
    "(health checks start at a region's first query).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 60),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for each answer.",
)
def check_command(
    inventory_dir: Path,
    limit: tuple[str, ...],
    output: str,
    servers: tuple[str, ...],
    expect_down: tuple[str, ...],
    geo_clients: tuple[str, ...],
    wait: float,
    timeout: float,
) -> None:
    """Ask every authoritative server as each region's test clients; exit 5 on a wrong answer."""
    topology = load_topology(inventory_dir)
    report = asyncio.run(
        check_dns(
            topology, limit=limit, expect_down=expect_down, servers=servers,
            geo_clients=parse_geo_clients(geo_clients), wait=wait, timeout=timeout,
        )
    )
    if output == "json":
        console.print_json(json.dumps(report.to_json()))
    else:
        for note in report.notes:
            console.print(f"note: {note}", markup=False)
        console.print(_table(report))
    report.raise_if_failed()


def _table(report: CheckReport) -> Table:
    geo = "geo routing" + (" with GeoIP" if report.geoip else "") if report.geo_routing else (
        "no geo routing"
    )
    passed = sum(r.ok for r in report.results)
    table = Table(
        title=(
            f"dns check of {report.zone} via {report.provider} ({geo}): "
            f"{passed}/{len(report.results)} right in {report.seconds:.1f} s"
        ),
        title_justify="left",
    )
    for column in ("region", "server", "query", "expected", "got", "ok"):
        table.add_column(column, overflow="fold")
    for result in report.results:
        e = result.expectation
        client = f"{e.client_subnet} ({e.country})" if e.country else e.client_subnet
        table.add_row(
            escape(e.region),
            escape(result.server),
            f"{e.rdtype} {escape(e.name)} from {escape(client)}\n[dim]{escape(e.why)}[/]",
            escape("\n".join(e.expected) or "-"),
            escape("\n".join(result.got) or "nothing"),
            "[green]ok[/]" if result.ok else "[bold red]WRONG[/]",
        )
    return table
