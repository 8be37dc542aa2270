"""Benchmark of the whole v1.20 -> v1.21 migration (``migrate apply``) on the running lab.

For each size (3, 10, 20 regions by default) it prepares a v1.20-style world and times one
``coder-migrate migrate apply -i INV --auto-approve`` on it (a new interpreter, as users run
it). The 3-region run of the same benchmark run is the baseline of the ratios.

The world of a size: a private Coder emulator (v1.21, the primary already upgraded) seeded
with one workspace provider (Networking v2 off) and one test workspace per region
(``regions: [...]`` in its config); an inventory written by ``bench/plan.py``'s
``write_inventory`` (regions share the lab's three region clusters round robin through
namespaces of their own, each with its own loopback access address, DNS names and geo subnet),
plus each region's workspace provider and test workspace; and the old
``coder/workspace-provider`` release installed with the lab's helm in each region's provider
namespace ``coder-<tag>-ws-rNN``. Preparing is not timed.

Waves: the canary region alone, then every other region at once, then the shared DNS names.
So the time grows with the slowest region of the second wave and with what the regions of a
wave share (the apply lock, the journal, 2 cores), not with the number of regions times one
region's time: "vs one by one" compares with the 3-region run's time per region times N.

After each size everything is deleted: its namespaces in the four lab clusters (the old
releases and the satellites with them), its DNS records, and the emulator (stopped by PID).

    .venv/bin/python bench/migrate.py [--sizes 3,10,20] [--address-block 41]
                                      [--port-base 18300] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Keep bench/ off the path (bench/dns.py would shadow dnspython); the repository first.
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from coder_migrate.lab.tools import chart_path, helm_binary, helm_environment  # noqa: E402
from tests.fixtures.coderd import CoderEmulator  # noqa: E402


def _bench_plan() -> Any:
    """bench/plan.py (not a package): its inventory writer and namespace cleanup."""
    spec = importlib.util.spec_from_file_location("bench_plan", ROOT / "bench" / "plan.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench_plan = _bench_plan()
CLI = [sys.executable, "-m", "coder_migrate"]
PROVIDER_RELEASE = "coder-workspace-provider"
OWNER = "platform-bot"  # the emulator's owner of the seeded test workspaces
HELM_WORKERS = 3
APPLY_TIMEOUT_SECONDS = 1200
APPLY_ATTEMPTS = 3
PDNS_ZONE_API = "http://127.0.0.1:15380/api/v1/servers/localhost/zones/lab.coder-migrate.test"
console = Console(highlight=False, width=160)


@dataclass
class Row:
    regions: int
    seconds: float
    """Summed wall time of the ``migrate apply`` runs it took to finish."""
    first: float
    """Wall time of the first run."""
    runs: int
    waves: dict[str, float]
    """Of the first run: seconds from its start to each region's passed health gate."""
    stopped: list[str]
    """The error line of each run that stopped (exit 7) before the last."""


def provider_namespace(tag: str, region: str) -> str:
    return f"coder-{tag}-ws-{region}"


def prepare(workdir: Path, regions: int, tag: str, args: argparse.Namespace) -> tuple[
    Path, CoderEmulator
]:
    names = [bench_plan.region_name(i) for i in range(1, regions + 1)]
    base = workdir / f"coderd-{regions}"
    base.mkdir(parents=True)
    config = base / "config.json"
    config.write_text(json.dumps({"regions": names, "build_step_seconds": 0.05}))
    emulator = CoderEmulator(mode="v1.21", state_dir=base / "state",
                             token_file=base / "admin-token", config_file=config).start()
    inventory = bench_plan.write_inventory(
        workdir, regions=regions, tag=tag, address_block=args.address_block,
        port_base=args.port_base, primary_url=emulator.url, token_file=emulator.token_file,
    )
    for name in names:
        path = inventory / "host_vars" / f"{name}.yml"
        data = yaml.safe_load(path.read_text("utf-8"))
        data["coder_workspace_providers"] = [
            {"name": name, "namespace": provider_namespace(tag, name), "release": PROVIDER_RELEASE}
        ]
        data["coder_test_workspace"] = {"name": f"migration-check-{name}", "owner": OWNER}
        path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")

    def install(index_name: tuple[int, str]) -> None:
        index, name = index_name
        context = bench_plan.REGION_CONTEXTS[(index - 1) % len(bench_plan.REGION_CONTEXTS)]
        command = [
            str(helm_binary()), "--kubeconfig", str(bench_plan.KUBECONFIG), "--kube-context",
            context, "upgrade", "--install", PROVIDER_RELEASE,
            str(chart_path("workspace-provider")),
            "-n", provider_namespace(tag, name), "--create-namespace",
            "--set", f"envproxy.accessURL=https://{name}.coder.lab.internal",
            "--set", "envproxy.clusterAddress=https://kubernetes.default.svc",
        ]
        result = subprocess.run(command, env={**os.environ, **helm_environment()},
                                capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            raise SystemExit(f"helm install of the old provider of {name}: {result.stderr}")

    with ThreadPoolExecutor(HELM_WORKERS) as pool:
        list(pool.map(install, enumerate(names, start=1)))
    return inventory, emulator


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200",
            "PATH": f"{bench_plan.VENV_BIN}:{os.environ['PATH']}"}


def plans_empty(inventory: Path) -> bool:
    """``migrate plan --detailed-exitcode`` exits 0: the migration is complete."""
    result = subprocess.run([*CLI, "migrate", "plan", "-i", str(inventory),
                             "--detailed-exitcode"], cwd=ROOT, env=_env(),
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode not in (0, 2):
        raise SystemExit(f"migrate plan exited {result.returncode}: {result.stderr[-2000:]}")
    return result.returncode == 0


def timed_apply(inventory: Path) -> tuple[float, int, dict[str, float], str]:
    """Wall time of ``migrate apply``, its exit code, seconds from its start to each region's
    passed health gate (its ``gate-ok`` progress line; the gate closes the region's wave) and
    the tail of its output."""
    env = _env()
    started = time.monotonic()
    process = subprocess.Popen([*CLI, "migrate", "apply", "-i", str(inventory), "--auto-approve"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    waves: dict[str, float] = {}
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if "gate-ok" in line:
            waves[line.split("gate-ok", 1)[1].strip().split(" ", 1)[0]] = (
                time.monotonic() - started
            )
    code = process.wait(timeout=APPLY_TIMEOUT_SECONDS)
    return time.monotonic() - started, code, waves, "".join(lines[-40:])


def delete_records(tag: str) -> None:
    headers = {"X-API-Key": (bench_plan.LAB_STATE / "secrets/pdns-api-key").read_text().strip()}
    zone = httpx.get(PDNS_ZONE_API, headers=headers, timeout=10, trust_env=False).json()
    doomed = [{"name": r["name"], "type": r["type"], "changetype": "DELETE"}
              for r in zone["rrsets"] if tag in r["name"]]
    if doomed:
        httpx.patch(PDNS_ZONE_API, headers=headers, json={"rrsets": doomed}, timeout=10,
                    trust_env=False).raise_for_status()


def measure(workdir: Path, regions: int, run_id: str, args: argparse.Namespace) -> Row:
    tag = f"bmig{run_id}n{regions}"
    console.print(f"[dim]{time.strftime('%H:%M:%S')} {regions} regions: preparing[/]")
    emulator: CoderEmulator | None = None
    try:
        inventory, emulator = prepare(workdir, regions, tag, args)
        row = Row(regions, 0.0, 0.0, 0, {}, [])
        # As a user does: a stopped apply (exit 7) is run again; it resumes from the journal.
        while row.runs < APPLY_ATTEMPTS:
            console.print(f"[dim]{time.strftime('%H:%M:%S')} {regions} regions: migrate apply[/]")
            seconds, code, waves, tail = timed_apply(inventory)
            row.runs += 1
            row.seconds += seconds
            if row.runs == 1:
                row.first, row.waves = seconds, waves
            console.print(f"  run {row.runs}: {seconds:.1f} s, exit {code}")
            if code == 0 and plans_empty(inventory):
                return row
            if code not in (0, 7):
                raise SystemExit(f"migrate apply exited {code}:\n{tail}")
            errors = [line for line in tail.splitlines() if line.startswith("error:")]
            row.stopped.append(errors[-1] if errors else f"exit {code}")
            console.print(f"  [yellow]{escape(row.stopped[-1])}[/]")
        raise SystemExit(f"{regions} regions: not migrated after {APPLY_ATTEMPTS} runs")
    finally:
        bench_plan.delete_namespaces(tag)
        delete_records(tag)
        if emulator is not None:
            emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=bench_plan.sizes, default=[3, 10, 20])
    parser.add_argument("--address-block", type=int, default=41, help="127.0.<block>.<n>")
    parser.add_argument("--port-base", type=int, default=18300)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    if 3 not in args.sizes:
        raise SystemExit("--sizes must include 3: the 3-region run is the baseline")
    if not bench_plan.KUBECONFIG.is_file():
        raise SystemExit("no running lab: `.venv/bin/coder-migrate lab up` first")

    load_before = os.getloadavg()
    started = time.monotonic()
    run_id = str(os.getpid() % 10000)
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as temporary:
        rows = [measure(Path(temporary), n, run_id, args) for n in args.sizes]
    load_after = os.getloadavg()

    base = next(r for r in rows if r.regions == 3)
    table = Table("regions", "migrate apply s", "vs 3 regions", "per region s",
                  "vs one by one", "runs", "first run s", "canary gate at s", "last gate at s",
                  title="coder-migrate migrate apply --auto-approve of a v1.20-style world "
                        "(gates: first run)")
    for row in rows:
        one_by_one = base.seconds / base.regions * row.regions
        canary = row.waves.get(bench_plan.region_name(1))
        table.add_row(
            str(row.regions), f"{row.seconds:.1f}", f"{row.seconds / base.seconds:.2f}x",
            f"{row.seconds / row.regions:.2f}", f"{row.seconds / one_by_one:.2f}x",
            str(row.runs), f"{row.first:.1f}",
            f"{canary:.1f}" if canary is not None else "-",
            f"{max(row.waves.values()):.1f}" if row.waves else "-",
        )
    console.print(table)
    for row in rows:
        for line in row.stopped:
            console.print(f"{row.regions} regions, a run stopped: {line}", markup=False)
    console.print(f"load average before {load_before[0]:.2f} / after {load_after[0]:.2f}; "
                  f"{os.cpu_count()} cores; total {time.monotonic() - started:.0f} s")
    if args.out is not None:
        args.out.write_text(json.dumps([r.__dict__ for r in rows], indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
