"""Benchmark of the whole v1.20 -> v1.21 migration (``migrate apply --probe``) on a private lab.

It starts a private lab of its own (``lab up`` with the state in ``--state-dir``, ports moved
by ``--port-offset``, region addresses ``127.0.<--address-block>.N``; the checkout's ``.lab``
is never touched) and takes it down at the end (``--keep-lab`` leaves it running). For each
size (3, 10, 20, 50 regions by default) it prepares a v1.20-style world and times one
``coder-migrate migrate apply -i INV --auto-approve --probe`` on it (a new interpreter, as
users run it), with the probe's synthetic user per region on its test workspace's app. The
3-region run of the same benchmark run is the baseline of the ratios.

The world of a size (preparing it is not timed):

- a private Coder emulator (v1.21: the primary already upgraded) seeded with one workspace
  provider (Networking v2 off) and one test workspace ``migration-check-rNN`` of
  ``platform-bot`` per region, each provider registered with the envproxy address the lab
  plays it on: ``http://127.0.<block>.<N>:<17180 + offset + N>`` (its satellite will be on
  ``:<17080 + offset + N>`` of the same address), dev URLs ``*.rNN.coder.lab.internal``;
- an inventory written by ``bench/plan.py``'s ``write_inventory`` and moved to the private lab
  (:meth:`tests.helpers.PrivateLab.relocate`): regions share the lab's three region clusters
  round robin through namespaces of their own, each with its own loopback access address, DNS
  names and geo subnet; plus each region's workspace provider and test workspace;
- the old ``coder/workspace-provider`` release in each region's provider namespace
  ``coder-<tag>-ws-rNN``, installed with the lab's helm as ``lab up --world v1.20`` installs
  it (``coder_migrate/lab/world_releases.py``: the envproxy token the primary issued, the
  envproxy address, the primary as ``cemanager.accessURL``), so the lab plays its envproxy pod
  and users reach their workspace through it before the switch, as in the real world. The
  benchmark waits until every region's app answers through its envproxy.

Waves: the canary region alone, then every other region at once, then the shared DNS names.
Besides the wall time it reports where the time went, from the runner's progress lines (each
timed as it arrives): start-up (interpreter, inventory, preflight, plan, lock, the probe's
users logged in and 2 s of "before") up to the first change, each wave, and the end (2 s of
"after", the report); and per change kind the summed and longest ``started`` -> ``done``.

After each size everything is deleted: its namespaces in the four lab clusters (the old
releases and the satellites with them), its DNS records, and the emulator (stopped by PID).

    .venv/bin/python bench/migrate.py [--sizes 3,10,20,50] [--port-offset 5500]
        [--address-block 50] [--state-dir DIR] [--keep-lab] [--out FILE] [--log FILE]
        [--lanes N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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

from coder_migrate.lab.paths import CacheLayout, StateLayout  # noqa: E402
from coder_migrate.lab.runtime import Lab  # noqa: E402
from coder_migrate.lab.settings import LabSettings  # noqa: E402
from coder_migrate.lab.tools import chart_path, helm_binary, helm_environment  # noqa: E402
from coder_migrate.probe.users import APP  # noqa: E402
from tests.fixtures.coderd import CoderEmulator  # noqa: E402
from tests.helpers import PrivateLab  # noqa: E402


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
#: Satellite of region N on 127.0.<block>.N:<SATELLITE_PORT_BASE + offset + N>, its envproxy
#: on the same address, port ENVPROXY_PORT_BASE + offset + N (the lab's own world: 17081 and
#: 17181 on 127.0.1.N).
SATELLITE_PORT_BASE = 17080
ENVPROXY_PORT_BASE = 17180
HELM_WORKERS = 3
APPLY_TIMEOUT_SECONDS = 1200
APPLY_ATTEMPTS = 3
ENVPROXY_READY_SECONDS = 300.0
TARGET_SECONDS_50 = 60.0
PHASES = ("started", "done", "failed", "gate", "gate-ok")
console = Console(highlight=False, width=200)


@dataclass
class ProbeNumbers:
    requests: int = 0
    failed: int = 0
    drops: int = 0
    gap: float = 0.0
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)
    """The report's failure lines."""


@dataclass
class Row:
    regions: int
    seconds: float
    """Summed wall time of the ``migrate apply --probe`` runs it took to finish."""
    first: float
    """Wall time of the first run."""
    runs: int
    phases: dict[str, float]
    """Of the first run: seconds per part (start-up, waves, end); see :func:`phases_of`."""
    kinds: dict[str, tuple[int, float, float]]
    """Of the first run: per change kind, count, summed and longest started -> done."""
    probe: ProbeNumbers
    """Summed over the runs (the worst gap: the longest of any run)."""
    stopped: list[str]
    """The error line of each run that stopped (exit 7) before the last."""


class BenchLab:
    """The private lab of the benchmark and what its inventories need from it."""

    def __init__(self, state_dir: Path, port_offset: int, address_block: int) -> None:
        self.private = PrivateLab(state_dir, port_offset, address_block)
        self.settings = LabSettings.create(port_offset=port_offset)
        self.env = {**os.environ, **self.private.environment(), "COLUMNS": "200",
                    "PATH": f"{bench_plan.VENV_BIN}:{os.environ['PATH']}"}

    @property
    def kubeconfig(self) -> Path:
        return self.private.state_dir / "kubeconfig"

    def up(self) -> None:
        result = subprocess.run([*CLI, "lab", "up"], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=900, check=False)
        if result.returncode != 0:
            raise SystemExit(f"lab up exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")

    def down(self) -> None:
        Lab(StateLayout(self.private.state_dir), CacheLayout.default()).down()

    def address(self, index: int) -> str:
        return f"127.0.{self.private.address_block}.{index}"

    def envproxy_url(self, index: int) -> str:
        port = ENVPROXY_PORT_BASE + self.private.port_offset + index
        return f"http://{self.address(index)}:{port}"

    def relocate(self, inventory: Path) -> None:
        """The inventory's places of the checkout's lab (``.lab``, fixed ports) moved to this
        lab's; fails if one is left."""
        for path in sorted(inventory.rglob("*.yml")):
            text = self.private.relocate(path.read_text(encoding="utf-8"))
            if f"{ROOT}/.lab" in text:
                raise SystemExit(f"{path}: still names the checkout's .lab")
            path.write_text(text, encoding="utf-8")

    def delete_records(self, tag: str) -> None:
        api = (f"http://127.0.0.1:{self.settings.powerdns_api_port}/api/v1/servers/localhost/"
               f"zones/{bench_plan.ZONE}")
        key = (self.private.state_dir / "secrets" / "pdns-api-key").read_text().strip()
        headers = {"X-API-Key": key}
        zone = httpx.get(api, headers=headers, timeout=10, trust_env=False).json()
        doomed = [{"name": r["name"], "type": r["type"], "changetype": "DELETE"}
                  for r in zone["rrsets"] if tag in r["name"]]
        if doomed:
            httpx.patch(api, headers=headers, json={"rrsets": doomed}, timeout=10,
                        trust_env=False).raise_for_status()


def provider_namespace(tag: str, region: str) -> str:
    return f"coder-{tag}-ws-{region}"


def devurl_host(region: str) -> str:
    return f"*.{region}.coder.lab.internal"


def app_host(region: str) -> str:
    """The Host of the region's test workspace app through its envproxy (the probe's)."""
    return f"{APP}--migration-check-{region}--{OWNER}" + devurl_host(region).removeprefix("*")


def prepare(lab: BenchLab, workdir: Path, regions: int, tag: str) -> tuple[Path, CoderEmulator]:
    names = [bench_plan.region_name(i) for i in range(1, regions + 1)]
    base = workdir / f"coderd-{regions}"
    base.mkdir(parents=True)
    config = base / "config.json"
    config.write_text(json.dumps({
        "regions": names, "build_step_seconds": 0.05,
        "providers": [{"name": name, "envproxy_access_url": lab.envproxy_url(index),
                       "devurl_host": devurl_host(name)}
                      for index, name in enumerate(names, start=1)],
    }))
    emulator = CoderEmulator(mode="v1.21", state_dir=base / "state",
                             token_file=base / "admin-token", config_file=config).start()
    inventory = bench_plan.write_inventory(
        workdir, regions=regions, tag=tag, address_block=lab.private.address_block,
        port_base=SATELLITE_PORT_BASE + lab.private.port_offset, primary_url=emulator.url,
        token_file=emulator.token_file,
    )
    for name in names:
        path = inventory / "host_vars" / f"{name}.yml"
        data = yaml.safe_load(path.read_text("utf-8"))
        data["coder_workspace_providers"] = [
            {"name": name, "namespace": provider_namespace(tag, name), "release": PROVIDER_RELEASE}
        ]
        data["coder_test_workspace"] = {"name": f"migration-check-{name}", "owner": OWNER}
        path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    lab.relocate(inventory)
    admin = {"Session-Token": emulator.admin_token}
    values_dir = base / "values"
    values_dir.mkdir(mode=0o700)

    def install(index_name: tuple[int, str]) -> None:
        """As ``lab up --world v1.20`` installs a provider (world_releases.provider_values):
        the token the primary issued for its envproxy, in a values file only we can read."""
        index, name = index_name
        issued = httpx.post(f"{emulator.url}/emulator/providers/{name}/envproxy-token",
                            headers=admin, timeout=10, trust_env=False)
        issued.raise_for_status()
        values = {
            "ingress": {"useDefault": False},
            "envproxy": {"accessURL": lab.envproxy_url(index),
                         "clusterAddress": "https://kubernetes.default.svc",
                         "token": issued.json()["envproxy_token"]},
            "devurls": {"host": devurl_host(name)},
            "cemanager": {"accessURL": emulator.url},
        }
        values_file = values_dir / f"{name}.yml"
        values_file.touch(mode=0o600)
        values_file.write_text(yaml.safe_dump(values), "utf-8")
        context = bench_plan.REGION_CONTEXTS[(index - 1) % len(bench_plan.REGION_CONTEXTS)]
        command = [
            str(helm_binary()), "--kubeconfig", str(lab.kubeconfig), "--kube-context", context,
            "upgrade", "--install", PROVIDER_RELEASE, str(chart_path("workspace-provider")),
            "-n", provider_namespace(tag, name), "--create-namespace", "-f", str(values_file),
        ]
        result = subprocess.run(command, env={**os.environ, **helm_environment()},
                                capture_output=True, text=True, timeout=300, check=False)
        values_file.unlink()
        if result.returncode != 0:
            raise SystemExit(f"helm install of the old provider of {name}: {result.stderr}")

    with ThreadPoolExecutor(HELM_WORKERS) as pool:
        list(pool.map(install, enumerate(names, start=1)))
    wait_for_envproxies(lab, names, emulator.admin_token)
    return inventory, emulator


def wait_for_envproxies(lab: BenchLab, names: list[str], token: str) -> None:
    """Until every region's test workspace app answers through its envproxy (the lab's pod
    runner starts one per release), as the probe's users will ask it."""
    waiting = dict(enumerate(names, start=1))
    deadline = time.monotonic() + ENVPROXY_READY_SECONDS
    with httpx.Client(timeout=5, trust_env=False) as client:
        while waiting:
            for index, name in list(waiting.items()):
                try:
                    answer = client.get(f"{lab.envproxy_url(index)}/probe",
                                        headers={"Host": app_host(name), "Session-Token": token})
                except httpx.HTTPError:
                    continue
                if answer.status_code == 200:
                    del waiting[index]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"envproxies of {sorted(waiting.values())} not answering after "
                                 f"{ENVPROXY_READY_SECONDS:.0f} s (the lab's pods.json and "
                                 "logs/pods/)")
            time.sleep(1)


def plans_empty(lab: BenchLab, inventory: Path) -> bool:
    """``migrate plan --detailed-exitcode`` exits 0: the migration is complete."""
    result = subprocess.run([*CLI, "migrate", "plan", "-i", str(inventory),
                             "--detailed-exitcode"], cwd=ROOT, env=lab.env,
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode not in (0, 2):
        raise SystemExit(f"migrate plan exited {result.returncode}: {result.stderr[-2000:]}")
    return result.returncode == 0


@dataclass
class Apply:
    seconds: float
    code: int
    events: list[tuple[float, str, str, str]]
    """(seconds from the start, phase, region, text) per progress line."""
    lines: list[str]


def apply_command(lanes: int | None) -> list[str]:
    """How the benchmark runs ``coder-migrate``; with *lanes*, the runner's regions at once
    (``coder_migrate.engine.apply.CONCURRENCY``, 32) set to that for the experiment."""
    if lanes is None:
        return CLI
    return [sys.executable, "-c",
            "import coder_migrate.engine.apply as a; "
            f"a.CONCURRENCY = {lanes}; "
            "from coder_migrate.cli import main; main(prog_name='coder-migrate')"]


def timed_apply(lab: BenchLab, inventory: Path, lanes: int | None) -> Apply:
    """``migrate apply --auto-approve --probe``: its wall time, exit code, each progress line
    with the second it came, and its output."""
    started = time.monotonic()
    process = subprocess.Popen(
        [*apply_command(lanes), "migrate", "apply", "-i", str(inventory), "--auto-approve",
         "--probe"],
        cwd=ROOT, env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    events: list[tuple[float, str, str, str]] = []
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        words = line.split(maxsplit=2)
        if len(words) >= 2 and words[0] in PHASES:
            events.append((time.monotonic() - started, words[0], words[1],
                           words[2].strip() if len(words) > 2 else ""))
    code = process.wait(timeout=APPLY_TIMEOUT_SECONDS)
    return Apply(time.monotonic() - started, code, events, lines)


_TOTAL = re.compile(r"^total: (\d+) failed; \d+ of (\d+) requests, websocket drops (\d+) .*"
                    r"longest gap ([\d.]+) s")
_PROBE = re.compile(r"^probe: .* for ([\d.]+) s$")
_FAILURE = re.compile(r"^\s+[\w-]+: \d+ failed (request|websocket)")


def probe_numbers(lines: list[str]) -> ProbeNumbers:
    """The probe report's total line, its duration and its failure lines; a run without a
    report (the probe did not start) fails the benchmark."""
    numbers = ProbeNumbers()
    total = None
    for line in lines:
        if (match := _TOTAL.match(line)) is not None:
            total = match
        elif (match := _PROBE.match(line.strip())) is not None:
            numbers.seconds = float(match[1])
        elif _FAILURE.match(line):
            numbers.lines.append(line.strip())
    if total is None:
        raise SystemExit("no probe report (total: ...) in the output:\n" + "".join(lines[-40:]))
    numbers.failed, numbers.requests = int(total[1]), int(total[2])
    numbers.drops, numbers.gap = int(total[3]), float(total[4])
    return numbers


_STOP_WORDS = {"for", "of", "in", "on", "from"}


def change_kind(text: str) -> str:
    """A change's kind from its ``started`` description: its verb and the words before the
    first name (``create helm release coder-x-r01 (...)`` -> ``create helm release``;
    ``act DNS answers for r01`` -> ``act DNS answers``)."""
    words = []
    for word in text.split():
        if (word in _STOP_WORDS or re.search(r"[\d_./:'\"(]", word)
                or word.startswith("coder-")):
            break
        words.append(word)
    return " ".join(words) or text.split()[0]


def phases_of(run: Apply, canary: str) -> tuple[dict[str, float], dict[str, tuple[int, float,
                                                                                   float]]]:
    """Where a run's wall time went: start-up to the first change, the canary wave (to its
    gate), the other regions (to their last gate), the shared DNS wave (to the last change
    line), the end (to the exit); and per change kind count, summed and longest duration."""
    starts = [at for at, phase, _, _ in run.events if phase == "started"]
    gates = {region: at for at, phase, region, _ in run.events if phase == "gate-ok"}
    if not starts:
        return {"start-up": run.seconds}, {}
    first = min(starts)
    canary_gate = gates.get(canary, first)
    regions_gate = max((at for region, at in gates.items() if region != "primary"),
                       default=canary_gate)
    last = max(at for at, _, _, _ in run.events)
    phases = {"start-up": first, "canary wave": canary_gate - first,
              "other regions": regions_gate - canary_gate, "shared DNS": last - regions_gate,
              "end": run.seconds - last}
    # A region's changes run one after the other: its done (or failed) line ends the
    # change it started last; its gate-ok line ends its wait for the health gate.
    running: dict[str, tuple[float, str]] = {}
    durations: dict[str, list[float]] = defaultdict(list)
    for at, phase, region, text in run.events:
        if phase == "started":
            running[region] = (at, change_kind(text))
        elif phase == "gate":
            running[region] = (at, "health gate")
        elif phase in ("done", "failed", "gate-ok") and region in running:
            since, kind = running.pop(region)
            durations[kind].append(at - since)
    kinds = {kind: (len(v), sum(v), max(v)) for kind, v in durations.items()}
    return phases, kinds


def measure(lab: BenchLab, workdir: Path, regions: int, run_id: str, log: Path | None,
            lanes: int | None) -> Row:
    tag = f"bmig{run_id}n{regions}"
    console.print(f"[dim]{time.strftime('%H:%M:%S')} {regions} regions: preparing[/]")
    emulator: CoderEmulator | None = None
    try:
        inventory, emulator = prepare(lab, workdir, regions, tag)
        row = Row(regions, 0.0, 0.0, 0, {}, {}, ProbeNumbers(), [])
        # As a user does: a stopped apply (exit 7) is run again; it resumes from the journal.
        while row.runs < APPLY_ATTEMPTS:
            console.print(f"[dim]{time.strftime('%H:%M:%S')} {regions} regions: "
                          "migrate apply --probe[/]")
            run = timed_apply(lab, inventory, lanes)
            if log is not None:
                with log.open("a", encoding="utf-8") as out:
                    out.write(f"== {regions} regions, run {row.runs + 1}, exit {run.code}, "
                              f"{run.seconds:.1f} s\n{''.join(run.lines)}")
            row.runs += 1
            row.seconds += run.seconds
            probe = probe_numbers(run.lines)
            row.probe.requests += probe.requests
            row.probe.failed += probe.failed
            row.probe.drops += probe.drops
            row.probe.seconds += probe.seconds
            row.probe.gap = max(row.probe.gap, probe.gap)
            row.probe.lines += probe.lines
            if row.runs == 1:
                row.first = run.seconds
                row.phases, row.kinds = phases_of(run, bench_plan.region_name(1))
            console.print(f"  run {row.runs}: {run.seconds:.1f} s, exit {run.code}; probe "
                          f"{probe.failed} failed of {probe.requests}, longest gap "
                          f"{probe.gap:.2f} s")
            if run.code == 0 and plans_empty(lab, inventory):
                return row
            tail = "".join(run.lines[-40:])
            if run.code not in (0, 7):
                raise SystemExit(f"migrate apply exited {run.code}:\n{tail}")
            errors = [line for line in tail.splitlines() if line.startswith("error:")]
            row.stopped.append(errors[-1] if errors else f"exit {run.code}")
            console.print(f"  [yellow]{escape(row.stopped[-1])}[/]")
        raise SystemExit(f"{regions} regions: not migrated after {APPLY_ATTEMPTS} runs")
    finally:
        bench_plan.delete_namespaces(tag, lab.kubeconfig)
        lab.delete_records(tag)
        if emulator is not None:
            emulator.stop()


def print_tables(rows: list[Row], lanes: int | None) -> None:
    base = next(r for r in rows if r.regions == 3)
    table = Table("regions", "migrate apply s", "vs 3 regions", "per region s",
                  "vs one by one", "runs", "probe requests", "failed", "websocket drops",
                  "worst gap s",
                  title="coder-migrate migrate apply --auto-approve --probe of a v1.20-style "
                        "world (wall time of every run it took"
                        + (f"; {lanes} lanes)" if lanes else ")"))
    for row in rows:
        one_by_one = base.seconds / base.regions * row.regions
        table.add_row(
            str(row.regions), f"{row.seconds:.1f}", f"{row.seconds / base.seconds:.2f}x",
            f"{row.seconds / row.regions:.2f}", f"{row.seconds / one_by_one:.2f}x",
            str(row.runs), str(row.probe.requests), str(row.probe.failed),
            str(row.probe.drops), f"{row.probe.gap:.2f}",
        )
    console.print(table)
    names = list(dict.fromkeys(name for row in rows for name in row.phases))
    phases = Table("regions", *(f"{n} s" for n in names), "first run s",
                   title="where the first run's wall time went (from the runner's progress "
                         "lines)")
    for row in rows:
        phases.add_row(str(row.regions), *(f"{row.phases.get(n, 0.0):.1f}" for n in names),
                       f"{row.first:.1f}")
    console.print(phases)
    kinds = list(dict.fromkeys(kind for row in rows for kind in row.kinds))
    changes = Table("change kind", *(f"{row.regions}: n / sum s / max s" for row in rows),
                    title="changes of the first run, started -> done (concurrent changes "
                          "overlap: sums, not wall)")
    for kind in kinds:
        cells = []
        for row in rows:
            count, total, longest = row.kinds.get(kind, (0, 0.0, 0.0))
            cells.append(f"{count} / {total:.1f} / {longest:.1f}" if count else "-")
        changes.add_row(kind, *cells)
    console.print(changes)
    for row in rows:
        for line in row.stopped:
            console.print(f"{row.regions} regions, a run stopped: {line}", markup=False)
        for line in row.probe.lines:
            console.print(f"{row.regions} regions, probe: {line}", markup=False)
    fifty = next((r for r in rows if r.regions == 50), None)
    if fifty is not None:
        console.print(f"target 50 regions <= {TARGET_SECONDS_50:.0f} s: {fifty.seconds:.1f} s; "
                      f"target 0 failed probe requests: "
                      f"{sum(r.probe.failed for r in rows)} failed in all sizes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=bench_plan.sizes, default=[3, 10, 20, 50])
    parser.add_argument("--port-offset", type=int, default=5500)
    parser.add_argument("--address-block", type=int, default=50, help="127.0.<block>.<n>")
    parser.add_argument("--state-dir", type=Path,
                        help="the private lab's state (default: a temporary directory)")
    parser.add_argument("--keep-lab", action="store_true",
                        help="leave the private lab running (with --state-dir)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    parser.add_argument("--log", type=Path, help="append each run's output to this file")
    parser.add_argument("--lanes", type=int,
                        help="an experiment: the timed apply runs this many regions of a wave "
                        "at once (the runner's CONCURRENCY, 32 in the product)")
    args = parser.parse_args()
    if 3 not in args.sizes:
        raise SystemExit("--sizes must include 3: the 3-region run is the baseline")
    if not 1 <= max(args.sizes) <= 99:
        raise SystemExit(f"--sizes: 1 to 99 regions (two ports per region), found "
                         f"{max(args.sizes)}")
    if args.port_offset == 0:
        raise SystemExit("--port-offset 0 is the checkout's lab (reserved): give one of your own")
    if args.lanes is not None and args.lanes < 1:
        raise SystemExit(f"--lanes: 1 or more, found {args.lanes}")
    if args.keep_lab and args.state_dir is None:
        raise SystemExit("--keep-lab needs --state-dir (a temporary lab is always taken down)")

    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as temporary:
        state_dir = args.state_dir or Path(temporary) / "lab"
        lab = BenchLab(state_dir.resolve(), args.port_offset, args.address_block)
        console.print(f"[dim]{time.strftime('%H:%M:%S')} lab up (private: {state_dir}, "
                      f"port offset {args.port_offset}, 127.0.{args.address_block}.N)[/]")
        try:
            lab.up()
            load_before = os.getloadavg()
            started = time.monotonic()
            run_id = str(os.getpid() % 10000)
            rows = [measure(lab, Path(temporary), n, run_id, args.log, args.lanes)
                    for n in args.sizes]
            load_after = os.getloadavg()
        finally:
            if not args.keep_lab:
                lab.down()
    print_tables(rows, args.lanes)
    console.print(f"load average before {load_before[0]:.2f} / after {load_after[0]:.2f}; "
                  f"{os.cpu_count()} cores; total {time.monotonic() - started:.0f} s")
    if args.out is not None:
        args.out.write_text(json.dumps([r.__dict__ for r in rows], indent=1, default=vars),
                            encoding="utf-8")


if __name__ == "__main__":
    main()
