"""``coder-migrate lab``: build and run the local lab (see docs/lab.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click
from rich.markup import escape
from rich.table import Table

from coder_migrate.cli.console import console, err_console
from coder_migrate.cli.options import examples, output_option
from coder_migrate.errors import LabError
from coder_migrate.lab.build import LabBinaries, build_all
from coder_migrate.lab.paths import CACHE_ENV, STATE_ENV, CacheLayout, StateLayout
from coder_migrate.lab.settings import (
    CODER_MODES,
    PORT_OFFSET_ENV,
    WORLDS,
    CoderMode,
    LabSettings,
    World,
)
from coder_migrate.lab.tools import helm_environment

if TYPE_CHECKING:
    from coder_migrate.lab.runtime import Lab, LabEndpoints

cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=CACHE_ENV,
    default=None,
    help=f"Build cache (default ~/.cache/coder-migrate; env {CACHE_ENV}).",
)
state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=STATE_ENV,
    default=None,
    help=f"Lab state: kubeconfig, secrets, data, PIDs (default <checkout>/.lab; env {STATE_ENV}).",
)


def _lab(state_dir: Path | None, cache_dir: Path | None) -> Lab:
    # Imported here: the kubernetes client is slow to import and `lab build` needs none of it.
    from coder_migrate.lab.runtime import Lab

    return Lab(StateLayout.default(state_dir), CacheLayout.default(cache_dir))


@click.group("lab", epilog=examples(
    "coder-migrate lab build && coder-migrate lab up && eval \"$(coder-migrate lab env)\"",
    "coder-migrate lab down",
))
def lab() -> None:
    """The local lab: Kubernetes control planes per region, helm, PowerDNS, BIND, Coder."""


@lab.command("build", epilog=examples("coder-migrate lab build"))
@cache_dir_option
@click.option("--force", is_flag=True, help="Rebuild even what is cached.")
def build_command(cache_dir: Path | None, force: bool) -> None:
    """Build (once) kube-apiserver, controller-manager, scheduler, etcd, kwok, helm, helm-diff."""
    layout = CacheLayout.default(cache_dir)
    started = time.monotonic()
    built = build_all(layout, err_console, force=force)
    seconds = time.monotonic() - started
    if built:
        console.print(f"built {', '.join(built)} in {seconds:.0f} s into {layout.lab}",
                      markup=False)
    else:
        console.print(f"lab binaries up to date in {layout.lab}", markup=False)


@lab.command("lock", epilog=examples(
    "coder-migrate lab lock --check", "coder-migrate lab lock kubernetes",
))
@click.argument("components", nargs=-1)
@click.option(
    "--check", is_flag=True,
    help="Only check that each lock pins the whole build (compiles nothing); exit 1 if not.",
)
def lock_command(components: tuple[str, ...], check: bool) -> None:
    """Write (maintainers) or check the Go locks of the lab's components.

    Each component is built from coder_migrate/lab/locks/<component>/go.mod + go.sum with
    -mod=readonly. Run this after changing a version in coder_migrate/lab/versions.py,
    review the diff like any lock file, then run scripts/cold-build.
    """
    from coder_migrate.lab.build import COMPONENTS, component
    from coder_migrate.lab.lock import check_lock, write_lock

    chosen = [component(name) for name in components] or list(COMPONENTS)
    if check:
        problems = [p for each in chosen for p in check_lock(each)]
        for problem in problems:
            err_console.print(f"error: {problem}", markup=False, highlight=False)
        if problems:
            raise SystemExit(1)
        console.print(f"locks pin the whole build: {', '.join(c.name for c in chosen)}")
        return
    for each in chosen:
        with err_console.status(f"locking {each.name} {each.version}"):
            written = write_lock(each)
        console.print(f"locked {each.name} {each.version} in {written}", markup=False)


@lab.command("up", epilog=examples(
    "coder-migrate lab up", "coder-migrate lab up --world v1.20",
    "coder-migrate lab up --regions 1 --coder v2 --port-offset 100",
))
@click.option(
    "--regions",
    type=click.IntRange(0, 20),
    default=3,
    show_default=True,
    help="Region clusters beside the primary (us-east, eu-west, ap-southeast, region-4...).",
)
@click.option(
    "--coder",
    "coder_mode",
    type=click.Choice(CODER_MODES),
    default=None,
    help="Which Coder primary the emulator plays.  [default: v1.21; v1.20 with --world v1.20]",
)
@click.option(
    "--world",
    type=click.Choice(WORLDS),
    default=None,
    help="Also install a deployment before the migration: v1.20 = the primary's coder/coder "
    "1.20.0 release and a coder/workspace-provider release per region (docs/lab.md).",
)
@click.option(
    "--port-offset",
    type=click.IntRange(0, 10000),
    default=0,
    show_default=True,
    envvar=PORT_OFFSET_ENV,
    help="Add N to every fixed lab port (run a second lab beside the first).",
)
@state_dir_option
@cache_dir_option
def up_command(
    regions: int,
    coder_mode: str | None,
    world: str | None,
    port_offset: int,
    state_dir: Path | None,
    cache_dir: Path | None,
) -> None:
    """Start the lab (or reuse the running one): clusters, PowerDNS, BIND, Coder emulator."""
    if world == "v1.20" and coder_mode not in (None, "v1.20"):
        raise click.UsageError(
            f"--world v1.20 starts the primary as Coder 1.20; --coder {coder_mode} contradicts it"
        )
    started = time.monotonic()
    build_all(CacheLayout.default(cache_dir), err_console)
    settings = LabSettings.create(
        regions=regions, port_offset=port_offset,
        coder_mode=cast(CoderMode, coder_mode or "v1.21"), world=cast(World | None, world),
    )
    with err_console.status("starting the lab (clusters, PowerDNS, BIND, Coder emulator)"):
        endpoints, reused = _lab(state_dir, cache_dir).up(settings)
    seconds = time.monotonic() - started
    verb = "reused the running lab" if reused else f"lab up in {seconds:.1f} s"
    console.print(f"{verb}: {len(endpoints.contexts)} clusters, state in {endpoints.state_dir}",
                  markup=False)
    console.print(_env_lines(endpoints, CacheLayout.default(cache_dir)), markup=False)


@lab.command("status", epilog=examples(
    "coder-migrate lab status", "coder-migrate lab status --output json",
))
@output_option
@state_dir_option
@cache_dir_option
def status_command(output: str, state_dir: Path | None, cache_dir: Path | None) -> None:
    """Show what the lab runs: processes, PIDs, listening ports."""
    status = _lab(state_dir, cache_dir).status()
    if output == "json":
        console.print(json.dumps(status, indent=2), markup=False)
        return
    state = "running" if status["running"] else "not running"
    console.print(f"lab {state} (state {status['state_dir']})", markup=False)
    if status["processes"]:
        table = Table("process", "pid", "alive", "listening")
        for process in status["processes"]:
            ports = ", ".join(str(port) for port in process["ports"])
            alive = str(process["alive"]).lower()
            table.add_row(escape(str(process["name"])), str(process["pid"]), alive, ports)
        console.print(table)
    if status["binaries"]:
        built = Table("component", "version", "lock", "binary", "sha256")
        for binary in status["binaries"]:
            built.add_row(*(escape(str(binary[key])) for key in
                            ("component", "version", "lock", "binary", "sha256")))
        console.print(built)
    else:
        console.print("no lab binaries built yet; run `coder-migrate lab build`", markup=False)


@lab.command("env", epilog=examples('eval "$(coder-migrate lab env)"'))
@state_dir_option
@cache_dir_option
def env_command(state_dir: Path | None, cache_dir: Path | None) -> None:
    """Print `export KUBECONFIG=...` and the lab's endpoints (secrets as file paths only)."""
    endpoints = _lab(state_dir, cache_dir).endpoints()
    if endpoints is None:
        root = StateLayout.default(state_dir).root
        raise LabError(f"no lab in {root}; start one with `coder-migrate lab up`")
    console.print(_env_lines(endpoints, CacheLayout.default(cache_dir)), markup=False)


@lab.command("down", epilog=examples("coder-migrate lab down", "coder-migrate lab down --keep"))
@click.option("--keep", is_flag=True, help="Keep cluster data, DNS zones and secrets.")
@state_dir_option
@cache_dir_option
def down_command(keep: bool, state_dir: Path | None, cache_dir: Path | None) -> None:
    """Stop every process the lab started (by PID) and free its ports."""
    stopped = _lab(state_dir, cache_dir).down(keep=keep)
    kept = " (data kept)" if keep else ""
    console.print(f"lab down: stopped {len(stopped)} processes{kept}")


def _env_lines(endpoints: LabEndpoints, cache: CacheLayout) -> str:
    contexts = " ".join(endpoints.contexts.values())
    binaries = LabBinaries.from_cache(cache)
    helm = helm_environment(cache)
    lines = [
        f"export KUBECONFIG={endpoints.kubeconfig}",
        # The lab's kubectl and helm first; helm finds helm-diff through these two.
        f'export PATH="{binaries.kubectl.parent}:{binaries.helm.parent}:$PATH"',
        f"export HELM_PLUGINS={helm['HELM_PLUGINS']}",
        f"export HELM_DATA_HOME={helm['HELM_DATA_HOME']}",
        f"export CODER_MIGRATE_LAB_STATE={endpoints.state_dir}",
        f"export CODER_URL={endpoints.coder_url}",
        f"export CODER_SESSION_TOKEN_FILE={endpoints.coder_token_file}",
        f"export PDNS_API_URL={endpoints.powerdns_api_url}",
        f"export PDNS_API_KEY_FILE={endpoints.powerdns_api_key_file}",
        f"# kube contexts: {contexts}",
        f"# Coder emulator ({endpoints.coder_mode}"
        + (", then the primary release's version" if endpoints.coder_mode.startswith("v1") else "")
        + f"): {endpoints.coder_url}",
        f"# PowerDNS: DNS {endpoints.powerdns_dns[0]}:{endpoints.powerdns_dns[1]}, "
        f"API {endpoints.powerdns_api_url} (server {endpoints.powerdns_server_id})",
        f"# BIND (RFC 2136, TSIG {endpoints.tsig_key_name} {endpoints.tsig_algorithm}): "
        f"{endpoints.bind_dns[0]}:{endpoints.bind_dns[1]}, secret in {endpoints.tsig_secret_file}",
        f"# zone: {endpoints.zone}",
    ]
    return "\n".join(lines)
