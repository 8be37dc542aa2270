"""Benchmark of ``coder-migrate plan`` against ``ansible-playbook --check``, on the running lab.

For each size (1, 5, 20, 50 regions by default) it writes an inventory of that many regions
(see :func:`write_inventory`): the regions share the lab's three region clusters round-robin
through namespaces and releases of their own, each with its own loopback access URL, DNS
names and geo subnets, and a private Coder emulator (v1.21) as the primary, so nothing
collides with the lab's own inventory or with other users of the lab. Then, warm (one
unmeasured run first, then the median of ``--rounds``):

1. ``coder-migrate plan -i INV --no-dns`` (a new interpreter each time, as users run it);
2. the same plan in this process (``compute_plan``, a new Engine each round): planning without
   interpreter start-up and imports;
3. ``ansible-playbook -i INV playbooks/site.yml --check --tags deploy`` (the deploy roles:
   validate, primary, regions; DNS is left out on both sides): the baseline. Its warm-up
   does not depend on the inventory, so it runs once per benchmark.

First on an empty world (nothing deployed: the first plan), then, for ``--deployed`` sizes,
after ``coder-migrate apply --no-dns --auto-approve`` (the lab's pod runner then runs one
bundled proxy per region: 50 regions are 50 processes, too many for 2 cores beside the rest,
so deployed sizes stop at 20 by default). ``--profile`` adds a cProfile of one in-process plan
of the largest size and of the largest deployed size, and the time of each observation step.

Everything it deploys is deleted at the end of each size (its namespaces in the four lab
clusters); the emulators are stopped by PID.

    .venv/bin/python bench/plan.py [--sizes 1,5,20,50] [--deployed 1,5,20] [--rounds 3]
                                   [--forks 5] [--profile] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Keep bench/ off the path (bench/dns.py would shadow dnspython); the repository first.
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

import httpx  # noqa: E402
from kubernetes import client as kube_client  # noqa: E402
from kubernetes import config as kube_config  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from coder_migrate.engine import world as world_module  # noqa: E402
from coder_migrate.engine.run import PlanScope, compute_plan  # noqa: E402
from coder_migrate.engine.world import Engine  # noqa: E402
from coder_migrate.inventory import load_topology  # noqa: E402
from coder_migrate.lab.coderd import serve_command  # noqa: E402

LAB_INVENTORY = ROOT / "inventories" / "lab"
LAB_STATE = ROOT / ".lab"
KUBECONFIG = LAB_STATE / "kubeconfig"
CHARTS = ROOT / "coder_migrate" / "lab" / "charts"
ZONE = "lab.coder-migrate.test"
REGION_CONTEXTS = ("lab-us-east", "lab-eu-west", "lab-ap-southeast")
ALL_CONTEXTS = ("lab-primary", *REGION_CONTEXTS)
GEO = (("NA", "US"), ("EU", "IE"), ("AS", "SG"))
VENV_BIN = Path(sys.executable).parent
CLI = [sys.executable, "-m", "coder_migrate"]
TARGET_PLAN_20_SECONDS = 3.0
TARGET_SPEEDUP = 10.0
COMMAND_TIMEOUT_SECONDS = 900
CLEANUP_TIMEOUT_SECONDS = 120.0
APPLY_ATTEMPTS = 3
console = Console(highlight=False, width=160)


# -- the inventory ----------------------------------------------------------------------------


def region_name(index: int) -> str:
    return f"r{index:02d}"


def write_inventory(
    destination: Path, *, regions: int, tag: str, address_block: int, port_base: int,
    primary_url: str, token_file: Path,
) -> Path:
    """An inventory of *regions* regions on the lab, named after *tag* (see the docstring).

    Region ``rNN`` runs in ``lab-us-east`` / ``lab-eu-west`` / ``lab-ap-southeast`` (round
    robin), namespace and release ``coder-<tag>-rNN``, access URL
    ``http://127.0.<address_block>.<NN>:<port_base + NN>``, geo subnet ``10.<NN>.0.0/24``.
    The group variables are the lab's with absolute paths.
    """
    if not 1 <= regions <= 250:
        raise SystemExit(f"--sizes: 1 to 250 regions per inventory, found {regions}")
    target = destination / f"bench-{tag}"
    (target / "group_vars" / "all").mkdir(parents=True)
    (target / "group_vars" / "coder_regions").mkdir(parents=True)
    (target / "host_vars").mkdir()
    names = [region_name(i) for i in range(1, regions + 1)]

    def dump(path: Path, data: dict[str, Any]) -> None:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    dump(target / "hosts.yml", {"all": {"children": {
        "coder_primary": {"hosts": {"primary": None}},
        "coder_regions": {"hosts": dict.fromkeys(names)},
    }}})
    shared = yaml.safe_load((LAB_INVENTORY / "group_vars/all/coder.yml").read_text("utf-8"))
    shared["coder_session_token"] = {"file": str(token_file)}
    shared["coder_chart"]["repo"] = str(CHARTS)
    shared["coder_dns"]["shared_hostname"] = f"coder-{tag}.{ZONE}"
    shared["coder_dns"]["powerdns"]["api_key"] = {"file": str(LAB_STATE / "secrets/pdns-api-key")}
    dump(target / "group_vars/all/coder.yml", shared)
    dump(target / "group_vars/coder_regions/region.yml", {
        "coder_kubeconfig": str(KUBECONFIG),
        "coder_namespace": f"coder-{tag}",
        "coder_release": f"coder-{tag}",
    })
    dump(target / "host_vars/primary.yml", {
        "coder_access_url": primary_url,
        "coder_hostname": f"coder-primary-{tag}.{ZONE}",
        "coder_wildcard_host": f"*.coder-primary-{tag}.{ZONE}",
        "coder_kube_context": "lab-primary",
        "coder_kubeconfig": str(KUBECONFIG),
        "coder_namespace": f"coder-{tag}",
        "coder_release": f"coder-{tag}",
        "coder_dns_targets": ["127.0.0.1"],
    })
    for index, name in enumerate(names, start=1):
        continent, country = GEO[(index - 1) % len(GEO)]
        host = f"127.0.{address_block}.{index}"
        data: dict[str, Any] = {
            "coder_region_display_name": f"Bench {name.upper()}",
            "coder_kube_context": REGION_CONTEXTS[(index - 1) % len(REGION_CONTEXTS)],
            "coder_namespace": f"coder-{tag}-{name}",
            "coder_release": f"coder-{tag}-{name}",
            "coder_access_url": f"http://{host}:{port_base + index}",
            "coder_hostname": f"coder-{name}-{tag}.{ZONE}",
            "coder_wildcard_host": f"*.coder-{name}-{tag}.{ZONE}",
            "coder_dns_targets": [host],
            "coder_geo": {
                "continents": [continent], "countries": [country],
                "subnets": [f"10.{index}.0.0/24"], "test_subnets": [f"10.{index}.0.1/32"],
            },
            "coder_test_workspace": {"name": f"migration-check-{name}", "owner": "lab-admin"},
        }
        if index == 1:
            data["coder_canary"] = True
        dump(target / "host_vars" / f"{name}.yml", data)
    return target


# -- processes --------------------------------------------------------------------------------


@dataclass
class Emulator:
    """A private Coder v1.21 emulator: the primary of one benchmark inventory."""

    base: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_file(self) -> Path:
        return self.base / "admin-token"

    def start(self) -> Emulator:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.base.mkdir(parents=True, exist_ok=True)
        log = (self.base / "coderd.log").open("ab")
        command = serve_command(listen=f"127.0.0.1:{self.port}", state_dir=self.base / "state",
                                mode="v1.21", token_file=self.token_file)
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"coder emulator exited: {(self.base / 'coderd.log').read_text()}")
            if self.token_file.exists():
                try:
                    httpx.get(self.url + "/api/v0/users/me", timeout=2)
                    return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit("coder emulator did not start within 30 s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def run(command: list[str], *, ok: tuple[int, ...] = (0,)) -> float:
    """Run *command*; its wall time. Any other exit code than *ok* ends the benchmark."""
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "COLUMNS": "160",
           "ANSIBLE_FORCE_COLOR": "0"}
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT_SECONDS, check=False)
    elapsed = time.monotonic() - started
    if result.returncode not in ok:
        raise SystemExit(
            f"{' '.join(command[:6])}... exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return elapsed


def in_process_plan(inventory: Path) -> float:
    started = time.monotonic()
    plan = asyncio.run(compute_plan(Engine(load_topology(inventory)), PlanScope(dns=False)))
    elapsed = time.monotonic() - started
    del plan
    return elapsed


def warm_median(
    rounds: int, measure: Callable[[], float], *, warm: bool = True
) -> tuple[float, list[float]]:
    if warm:
        measure()  # page cache, helm's and Ansible's caches, the emulator's first answers
    values = [measure() for _ in range(rounds)]
    return statistics.median(values), values


# -- cleanup ----------------------------------------------------------------------------------


@contextmanager
def core_api(context: str, kubeconfig: Path = KUBECONFIG) -> Iterator[kube_client.CoreV1Api]:
    api = kube_config.new_client_from_config(config_file=str(kubeconfig), context=context)
    try:
        yield kube_client.CoreV1Api(api)
    finally:
        api.close()


def bench_namespaces(tag: str, kubeconfig: Path = KUBECONFIG) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for context in ALL_CONTEXTS:
        with core_api(context, kubeconfig) as core:
            found[context] = [n.metadata.name for n in core.list_namespace().items
                              if n.metadata.name.startswith(f"coder-{tag}")]
    return found


def delete_namespaces(tag: str, kubeconfig: Path = KUBECONFIG) -> None:
    """Delete the namespaces of *tag* in every cluster of the lab of *kubeconfig* (the
    checkout's lab unless given) and wait until they are gone."""
    for context, names in bench_namespaces(tag, kubeconfig).items():
        with core_api(context, kubeconfig) as core:
            for name in names:
                try:
                    core.delete_namespace(name)
                except kube_client.ApiException as error:
                    if error.status != 404:
                        raise
    deadline = time.monotonic() + CLEANUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        left = {c: n for c, n in bench_namespaces(tag, kubeconfig).items() if n}
        if not left:
            return
        time.sleep(1)
    console.print(f"[yellow]namespaces still terminating after {CLEANUP_TIMEOUT_SECONDS:.0f} s: "
                  f"{left}[/]")


# -- observation steps ------------------------------------------------------------------------


@dataclass
class StepTimes:
    """Summed time per awaited observation step (concurrent steps overlap: sums, not wall)."""

    totals: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def wrap(self, owner: Any, attribute: str, label: str) -> Callable[[], None]:
        original = getattr(owner, attribute)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return await original(*args, **kwargs)
            finally:
                self.totals[label] = self.totals.get(label, 0.0) + time.monotonic() - started
                self.counts[label] = self.counts.get(label, 0) + 1

        setattr(owner, attribute, timed)
        return lambda: setattr(owner, attribute, original)


def profile_plan(inventory: Path, regions: int, top: int) -> None:
    """Where one in-process plan of *inventory* spends its time."""
    from coder_migrate.providers.helm import HelmClient
    from coder_migrate.providers.kube import KubeCluster

    steps = StepTimes()
    undo = [
        steps.wrap(Engine, "observe_site", "observe_site (one site, all steps)"),
        steps.wrap(Engine, "primary_records", "primary_records (Coder API)"),
        steps.wrap(Engine, "_satellite_key", "satellite key fetch"),
        steps.wrap(Engine, "_managed_or_empty", "sites record (ConfigMap)"),
        steps.wrap(HelmClient, "release", "helm release (its storage Secret)"),
        steps.wrap(KubeCluster, "namespace_exists", "kube namespace_exists"),
        steps.wrap(KubeCluster, "secret_keys", "kube secret_keys"),
        steps.wrap(KubeCluster, "pods", "kube pods"),
    ]
    engine = Engine(load_topology(inventory))
    profiler = cProfile.Profile()
    started = time.monotonic()
    profiler.enable()
    try:
        asyncio.run(compute_plan(engine, PlanScope(dns=False)))
    finally:
        profiler.disable()
        for restore in undo:
            restore()
    wall = time.monotonic() - started
    table = Table("step", "calls", "summed s", "per call s", "sum / wall",
                  title=f"observation steps, one in-process plan of {regions} regions "
                        f"(wall {wall:.2f} s, CONCURRENCY={world_module.CONCURRENCY})")
    for label, total in sorted(steps.totals.items(), key=lambda kv: -kv[1]):
        count = steps.counts[label]
        table.add_row(label, str(count), f"{total:.2f}", f"{total / count:.3f}",
                      f"{total / wall:.1f}x")
    console.print(table)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    console.print(f"cProfile, top {top} by own time (main thread only):")
    console.print(text.getvalue().split("\n", 6)[-1].rstrip(), markup=False)


# -- main -------------------------------------------------------------------------------------


@dataclass
class Row:
    regions: int
    world: str
    cli: float
    cli_all: list[float]
    in_process: float
    ansible: float
    ansible_all: list[float]
    apply: float | None = None


def apply_until_done(inventory: Path) -> tuple[float, int]:
    """``apply --no-dns --auto-approve`` until the plan is empty, as a user re-runs a stopped
    apply (exit 7); its summed wall time and the number of runs."""
    command = [*CLI, "apply", "-i", str(inventory), "--no-dns", "--auto-approve"]
    check = [*CLI, "plan", "-i", str(inventory), "--no-dns", "--detailed-exitcode"]
    total = 0.0
    for attempt in range(1, APPLY_ATTEMPTS + 1):
        total += run(command, ok=(0, 7) if attempt < APPLY_ATTEMPTS else (0,))
        try:
            run(check)  # exit 0: nothing left to do
        except SystemExit:
            continue
        return total, attempt
    raise SystemExit(f"apply of {inventory} did not converge in {APPLY_ATTEMPTS} runs")


def measure_size(
    args: argparse.Namespace, regions: int, workdir: Path, run_id: str,
    ansible_warmed: list[bool],
) -> list[Row]:
    tag = f"bench{run_id}n{regions}"
    emulator = Emulator(workdir / f"coderd-{regions}").start()
    rows: list[Row] = []
    try:
        inventory = write_inventory(
            workdir, regions=regions, tag=tag, address_block=args.address_block,
            port_base=args.port_base, primary_url=emulator.url, token_file=emulator.token_file,
        )
        plan_cmd = [*CLI, "plan", "-i", str(inventory), "--no-dns", "--output", "json"]
        ansible_cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory),
                       "playbooks/site.yml", "--check", "--forks", str(args.forks)]
        if args.ansible_tags:
            ansible_cmd += ["--tags", args.ansible_tags]

        def measure(world: str, apply_seconds: float | None = None) -> None:
            console.print(f"[dim]{time.strftime('%H:%M:%S')} {regions} regions, {world} world[/]")
            cli, cli_all = warm_median(args.rounds, lambda: run(plan_cmd))
            inproc, _ = warm_median(args.rounds, lambda: in_process_plan(inventory))
            # Ansible's warm-up (collections, roles, its own bytecode) does not depend on the
            # inventory: one warm run in the whole benchmark keeps 50-region runs bounded.
            ansible, ansible_all = warm_median(args.ansible_rounds, lambda: run(ansible_cmd),
                                               warm=not ansible_warmed)
            ansible_warmed.append(True)
            rows.append(Row(regions, world, cli, cli_all, inproc, ansible, ansible_all,
                            apply_seconds))
            console.print(f"  plan {cli:.2f} s, in-process {inproc:.2f} s, "
                          f"ansible --check {ansible:.2f} s")

        measure("empty")
        if regions in args.deployed:
            # The deployed world plans empty, or the numbers below would measure something else.
            apply_seconds, attempts = apply_until_done(inventory)
            if attempts > 1:
                console.print(f"  [yellow]apply needed {attempts} runs[/]")
            measure("deployed", apply_seconds)
        if args.profile and regions in (max(args.sizes), max(args.deployed, default=0)):
            profile_plan(inventory, regions, args.profile_top)
    finally:
        delete_namespaces(tag)
        emulator.stop()
    return rows


def sizes(text: str) -> list[int]:
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated region counts, found {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes, default=[1, 5, 20, 50])
    parser.add_argument("--deployed", type=sizes, default=[1, 5, 20],
                        help="sizes also measured after apply (one proxy process per region)")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs after the warm one")
    parser.add_argument("--ansible-rounds", type=int, default=3)
    parser.add_argument("--forks", type=int, default=5, help="ansible-playbook --forks")
    parser.add_argument("--ansible-tags", default="deploy",
                        help="ansible-playbook --tags ('' for the whole site playbook)")
    parser.add_argument("--address-block", type=int, default=40, help="127.0.<block>.<n>")
    parser.add_argument("--port-base", type=int, default=18100)
    parser.add_argument("--profile", action="store_true",
                        help="profile a plan of the largest size and largest deployed size")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    if not KUBECONFIG.is_file():
        raise SystemExit("no running lab: `.venv/bin/coder-migrate lab up` first")
    if shutil.which("ansible-playbook", path=str(VENV_BIN)) is None:
        raise SystemExit(f"ansible-playbook not in {VENV_BIN} (scripts/bootstrap)")

    load_before = os.getloadavg()
    started = time.monotonic()
    rows: list[Row] = []
    run_id = str(os.getpid() % 10000)
    ansible_warmed: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as temporary:
        for regions in args.sizes:
            rows.extend(measure_size(args, regions, Path(temporary), run_id, ansible_warmed))
    load_after = os.getloadavg()

    baseline = {r.world: r for r in rows if r.regions == min(args.sizes)}
    table = Table(
        "regions", "world", "plan CLI s", "in-process s", "start-up s", f"vs {min(args.sizes)}"
        " region(s)", "per region s", "ansible --check s", "ansible / plan",
        title=f"plan vs ansible-playbook site.yml --check --tags {args.ansible_tags or '(all)'}"
              f" --forks {args.forks}: warm medians of {args.rounds} ({args.ansible_rounds} "
              "for Ansible)",
    )
    for row in rows:
        base = baseline[row.world]
        table.add_row(
            str(row.regions), row.world, f"{row.cli:.2f}", f"{row.in_process:.2f}",
            f"{row.cli - row.in_process:.2f}", f"{row.cli / base.cli:.2f}x",
            f"{row.cli / row.regions:.3f}", f"{row.ansible:.2f}",
            f"{row.ansible / row.cli:.1f}x",
        )
    console.print(table)
    for row in rows:
        applied = f", apply {row.apply:.1f} s" if row.apply is not None else ""
        console.print(f"{row.regions:>3} {row.world:<8} plan {[round(v, 2) for v in row.cli_all]}"
                      f", ansible {[round(v, 2) for v in row.ansible_all]}{applied}")
    twenty = next((r for r in rows if r.regions == 20 and r.world == "empty"), None)
    if twenty is not None:
        console.print(f"target plan(20) <= {TARGET_PLAN_20_SECONDS:.0f} s: {twenty.cli:.2f} s; "
                      f"target ansible/plan >= {TARGET_SPEEDUP:.0f}x: "
                      f"{min(r.ansible / r.cli for r in rows):.1f}x at worst")
    console.print(f"load average before {load_before[0]:.2f} / after {load_after[0]:.2f}; "
                  f"{os.cpu_count()} cores; total {time.monotonic() - started:.0f} s")
    if args.out is not None:
        args.out.write_text(json.dumps([r.__dict__ for r in rows], indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
