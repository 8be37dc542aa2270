"""Benchmark of the local lab, in one run, on a private lab instance (own state directory,
ports moved with a port offset, so a running lab is left alone).

1. Build, with ``--cold``: ``lab build`` as a new machine runs it, from an empty lab cache, an
   empty Go module cache and an empty Go build cache (all under a temporary directory), against
   the baseline of a second build that keeps only the module cache (so the difference is what
   the downloads cost); both builds must give identical binaries (sha256 per binary). Without
   ``--cold``: what each component took the last time it was built (the cache stamps).
   The warm ``lab build`` (a no-op) now.
2. Warm ``lab up`` (binaries cached, no data yet): 1 primary + 3 regions against 1 primary
   alone (the baseline), and a repeated ``lab up`` that reuses the running lab.
3. RSS per cluster (etcd, kube-apiserver, controller-manager, scheduler, kwok) after the
   clusters settled, against the 600 MB target.
4. One ``helm upgrade --install --wait`` of the stand-in coder chart (satellite mode) in a
   region, against the same install without ``--wait`` (the baseline).

    .venv/bin/python bench/lab.py [--cold] [--rounds 2] [--port-offset 2000] [--settle 10]
    .venv/bin/python bench/lab.py --cold --no-up    # what scripts/cold-build runs
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# bench/dns.py would shadow dnspython: drop this directory from the path, put the repo first.
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from coder_migrate.lab.build import build_all, build_stamps, build_timings  # noqa: E402
from coder_migrate.lab.paths import CacheLayout, StateLayout  # noqa: E402
from coder_migrate.lab.runtime import Lab, LabManifest  # noqa: E402
from coder_migrate.lab.settings import LabSettings  # noqa: E402
from coder_migrate.lab.tools import chart_path, helm_binary, helm_environment  # noqa: E402

RSS_TARGET_MB = 600.0
console = Console(highlight=False)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed_up(lab: Lab, settings: LabSettings) -> tuple[float, bool]:
    started = time.monotonic()
    _, reused = lab.up(settings)
    return time.monotonic() - started, reused


def helm_install(lab: Lab, context: str, namespace: str, wait: bool) -> float:
    command = [
        str(helm_binary()),
        "--kubeconfig",
        str(lab.state.kubeconfig),
        "--kube-context",
        context,
        "upgrade",
        "bench",
        str(chart_path("coder-v1")),
        "--install",
        "--namespace",
        namespace,
        "--create-namespace",
        "--set",
        "coderd.satellite.enable=true",
        # coder/coder 1.21.0's `coderd` Service is a LoadBalancer; the lab has none.
        "--set",
        "coderd.serviceSpec.type=NodePort",
    ]
    if wait:
        command += ["--wait", "--timeout", "120s"]
    env = {**os.environ, **helm_environment()}
    started = time.monotonic()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.monotonic() - started


def helm_uninstall(lab: Lab, context: str, namespace: str) -> None:
    command = [
        str(helm_binary()),
        "--kubeconfig",
        str(lab.state.kubeconfig),
        "--kube-context",
        context,
        "uninstall",
        "bench",
        "--namespace",
        namespace,
        "--wait",
    ]
    env = {**os.environ, **helm_environment()}
    subprocess.run(command, env=env, check=True, capture_output=True)


def timed_build(root: Path, module_cache: Path) -> tuple[float, dict[str, dict[str, Any]]]:
    """``coder-migrate lab build`` into an empty cache under ROOT with an empty Go build cache
    and the Go module cache MODULE_CACHE; return its seconds and the stamps it wrote."""
    cache = CacheLayout(root / "lab-cache")
    build_cache = root / "go-build-cache"
    env = {**os.environ, "GOMODCACHE": str(module_cache), "GOCACHE": str(build_cache)}
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "coder_migrate", "lab", "build", "--cache-dir", str(cache.root)],
        env=env, check=True,
    )
    seconds = time.monotonic() - started
    subprocess.run(["chmod", "-R", "u+w", str(build_cache)], check=False)
    return seconds, build_stamps(cache)


def cold_builds(temporary: Path) -> None:
    """A cold build (empty module cache) and one keeping the module cache; print both."""
    module_cache = temporary / "go-module-cache"
    cold_seconds, cold = timed_build(temporary / "cold", module_cache)
    warm_seconds, warm = timed_build(temporary / "warm-modules", module_cache)
    table = Table("component", "version", "modules kept, s", "cold, s", "ratio",
                  title="lab build from empty caches (cold) vs keeping the Go module cache")
    for name, stamp in cold.items():
        baseline = float(warm[name]["seconds"])
        seconds = float(stamp["seconds"])
        table.add_row(name, str(stamp["version"]), f"{baseline:.0f}", f"{seconds:.0f}",
                      f"{seconds / baseline:.2f}x")
    table.add_row("whole `lab build`", "", f"{warm_seconds:.0f}", f"{cold_seconds:.0f}",
                  f"{cold_seconds / warm_seconds:.2f}x")
    console.print(table)
    digests = Table("component", "binary", "sha256 (cold)", "same in the second build",
                    title="build reproducibility")
    differ = []
    for name, stamp in cold.items():
        for binary, digest in stamp["sha256"].items():
            same = warm[name]["sha256"].get(binary) == digest
            digests.add_row(name, binary, str(digest), "yes" if same else "NO")
            if not same:
                differ.append(f"{name}/{binary}")
    console.print(digests)
    if differ:
        sys.exit(f"binaries differ between the two builds: {', '.join(differ)}")
    subprocess.run(["chmod", "-R", "u+w", str(module_cache)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true",
                        help="build twice from empty caches under a temporary directory")
    parser.add_argument("--no-up", action="store_true", help="only the build part")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port-offset", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before RSS")
    args = parser.parse_args()
    cache = CacheLayout.default()

    # 1. build
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="bench-lab-build-") as temporary:
            try:
                cold_builds(Path(temporary))
            finally:
                subprocess.run(["chmod", "-R", "u+w", temporary], check=False)
    started = time.monotonic()
    build_all(cache)
    warm_build = time.monotonic() - started
    timings = build_timings(cache)
    table = Table("component", "last build s", title="lab build (from the cache stamps)")
    for key, seconds in timings.items():
        table.add_row(key, f"{seconds:.0f}")
    table.add_row("total", f"{sum(timings.values()):.0f}")
    table.add_row("warm `lab build` now (no-op)", f"{warm_build:.2f}")
    console.print(table)
    if args.no_up:
        return

    # 2.-4. on private labs
    up_full: list[float] = []
    up_single: list[float] = []
    up_reuse: list[float] = []
    rss_rows: dict[str, list[float]] = {}
    helm_wait: list[float] = []
    helm_nowait: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as temporary:
        for round_number in range(args.rounds):
            single = Lab(StateLayout(Path(temporary) / f"single-{round_number}"), cache)
            settings_single = LabSettings.create(regions=0, port_offset=args.port_offset)
            try:
                up_single.append(timed_up(single, settings_single)[0])
            finally:
                single.down()

            lab = Lab(StateLayout(Path(temporary) / f"full-{round_number}"), cache)
            settings = LabSettings.create(regions=3, port_offset=args.port_offset)
            try:
                up_full.append(timed_up(lab, settings)[0])
                up_reuse.append(timed_up(lab, settings)[0])
                time.sleep(args.settle)
                manifest = lab.manifest()
                assert isinstance(manifest, LabManifest)
                for name, refs in manifest.clusters.items():
                    rss_rows.setdefault(name, []).append(sum(rss_mb(ref.pid) for ref in refs))
                context = manifest.settings.clusters[1].context
                for index in range(2):
                    namespace = f"bench-{round_number}-{index}"
                    if index % 2 == 0:
                        helm_nowait.append(helm_install(lab, context, namespace, wait=False))
                    else:
                        helm_wait.append(helm_install(lab, context, namespace, wait=True))
                    helm_uninstall(lab, context, namespace)
            finally:
                lab.down()

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    table = Table("measure", "baseline", "value", "ratio", title=f"lab up ({args.rounds} rounds)")
    table.add_row(
        "lab up 1+3 vs 1 primary (median s)",
        f"{median(up_single):.1f}",
        f"{median(up_full):.1f}",
        f"{median(up_full) / median(up_single):.2f}x",
    )
    table.add_row(
        "lab up again, reusing the running lab (median s)",
        f"{median(up_full):.1f}",
        f"{median(up_reuse):.2f}",
        f"{median(up_reuse) / median(up_full):.3f}x",
    )
    table.add_row(
        "helm upgrade --install --wait vs without --wait (median s)",
        f"{median(helm_nowait):.2f}",
        f"{median(helm_wait):.2f}",
        f"{median(helm_wait) / median(helm_nowait):.2f}x",
    )
    console.print(table)
    table = Table("cluster", "RSS MB (median)", f"vs target {RSS_TARGET_MB:.0f} MB", title="RSS")
    for name, values in rss_rows.items():
        table.add_row(name, f"{median(values):.0f}", f"{median(values) / RSS_TARGET_MB:.2f}x")
    console.print(table)
    console.print(
        f"all rounds: up 1+3 {[round(v, 1) for v in up_full]}, up 1 "
        f"{[round(v, 1) for v in up_single]}, helm --wait {[round(v, 2) for v in helm_wait]}"
    )


if __name__ == "__main__":
    main()
