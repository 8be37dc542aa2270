"""The proxy's own Python per request, without sockets: this tree against another git ref.

One client connection and one pooled upstream connection are driven with byte strings
through stand-in transports (a wrk-like GET of 100 B from nginx, satellite mode, so the
full path: parse, checks, route, upstream head, response head, framing, metrics). Only the
interpreter's work is measured (process CPU time), so the number holds on a busy machine
where wrk's are noisy; it leaves out the syscalls, which are the same in both trees.
Each tree runs in its own process, interleaved, and the best of the runs is kept. This
tree runs twice: as built (compiled with mypyc when scripts/bootstrap could) and as Python
(``PURE_PYTHON_PROXY=1``).

``--instructions`` counts instead the user-space instructions per request under valgrind's
callgrind (the difference between two runs of different lengths, so start-up cancels out):
exact and the same on a busy machine, where hardware counters (``perf stat``) are not
available in this VM. It counts two workloads: the same request each time (as wrk sends,
and as a polling client does: the proxy recognises a connection's repeated request), and
two requests in turn, so that no request repeats the one before it.

    .venv/bin/python bench/proxy_hotpath.py [--baseline-ref main] [--runs 10] [--instructions]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DRIVER = r"""
import asyncio, sys, time
from coder_migrate.proxy.server import ProxyServer
from coder_migrate.proxy.router import RouteTable
from coder_migrate.proxy.config import Limits
from coder_migrate.proxy.metrics import ProxyStats
try:  # the split data path
    from coder_migrate.proxy.responses import Answer, Target
    from coder_migrate.proxy.upstream import UpstreamConnection
    SPLIT = True
except ImportError:  # the single server module
    from coder_migrate.proxy.server import Answer, Target, UpstreamConnection
    SPLIT = False

class Transport:
    def write(self, data): pass
    def writelines(self, parts): pass
    def pause_reading(self): pass
    def resume_reading(self): pass
    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 5555) if name == "peername" else None
    def set_write_buffer_limits(self, high=None, low=None): pass
    def close(self): pass
    def is_closing(self): return False
    def get_write_buffer_size(self): return 0

class Local:
    def answer(self, kind, head): return Answer(200, b"OK")
    async def health_report(self): return Answer(200, b"{}")

loop = asyncio.new_event_loop()
primary = Target("127.0.0.1", 1, strip_credentials=False)
server = ProxyServer(loop=loop, table=RouteTable(mode="satellite"), limits=Limits(),
                     local=Local(), resolver=None, primary=primary, stats=ProxyStats())
client = server.protocol_factory("http")()
client.connection_made(Transport())
if SPLIT:
    upstream = UpstreamConnection(primary.key)
else:
    upstream = UpstreamConnection(server.pool, primary.key)
upstream.connection_made(Transport())
server.pool.idle[primary.key] = [upstream]
request = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
response = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 21:00:00 GMT\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 100\r\n"
            b"Last-Modified: Sat, 05 Dec 2026 20:00:00 GMT\r\nConnection: keep-alive\r\n"
            b"ETag: \"x\"\r\nAccept-Ranges: bytes\r\n\r\n" + b"s" * 100)
# "vary": two requests in turn, so no request repeats the one before it (the parser's and
# the connection's memory of the last request never applies).
requests = [request]
if sys.argv[2:] == ["vary"]:
    requests.append(request.replace(b"/small", b"/small?v=2"))
for index in range(2000):
    client.data_received(requests[index % len(requests)]); upstream.data_received(response)
count = int(sys.argv[1])
started = time.process_time()
for index in range(count):
    client.data_received(requests[index % len(requests)]); upstream.data_received(response)
print((time.process_time() - started) / count * 1e6)
"""


def export(ref: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "coder_migrate"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _env(tree: Path, pure: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PURE_PYTHON_PROXY"}
    env.update(PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    if pure:
        env["PURE_PYTHON_PROXY"] = "1"
    return env


def measure(tree: Path, count: int, pure: bool = False) -> float:
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, str(count)],
        cwd=tree,  # "-c" puts the working directory first on sys.path, before PYTHONPATH
        env=_env(tree, pure),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip())


def _callgrind_total(tree: Path, count: int, pure: bool, vary: bool) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", DRIVER, str(count), *(["vary"] if vary else [])],
        env=_env(tree, pure), cwd=tree, capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    match = re.search(r"Collected : (\d+)", out)
    if match is None:
        raise SystemExit(f"callgrind printed no total:\n{out[-2000:]}")
    return int(match.group(1))


def instructions(tree: Path, pure: bool = False, vary: bool = False) -> int:
    """User-space instructions per request: (total at 11,000 - total at 1,000) / 10,000."""
    return (
        _callgrind_total(tree, 11_000, pure, vary) - _callgrind_total(tree, 1_000, pure, vary)
    ) // 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument(
        "--instructions", action="store_true", help="Count instructions under callgrind."
    )
    args = parser.parse_args()
    if not 1 <= args.runs <= 50 or not 1000 <= args.requests <= 1_000_000:
        parser.error("bounded: --runs 1..50, --requests 1000..1000000")
    with tempfile.TemporaryDirectory(prefix="bench-hotpath-") as work:
        baseline = export(args.baseline_ref, Path(work))
        trees = {
            "this tree": (ROOT, False),
            "this tree, Python": (ROOT, True),
            args.baseline_ref: (baseline, True),
        }
        if args.instructions:
            if shutil.which("valgrind") is None:
                raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
            print("User-space instructions per request (callgrind, 10,000 requests; the same")
            print("request each time, and two requests in turn, so none repeats the last):")
            print("")
            print("| tree | same request | x baseline | two in turn | x baseline |")
            print("|---|---|---|---|---|")
            rows = {
                name: (instructions(tree, pure), instructions(tree, pure, vary=True))
                for name, (tree, pure) in trees.items()
            }
            same_base, vary_base = rows[args.baseline_ref]
            for name, (same, vary) in rows.items():
                print(
                    f"| {name} | {same:,} | {same / same_base:.2f} | {vary:,} | "
                    f"{vary / vary_base:.2f} |"
                )
            return
        results: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.runs):
            for name, (tree, pure) in trees.items():
                results[name].append(measure(tree, args.requests, pure))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    base = min(results[args.baseline_ref])
    print(f"Python per request, best of {args.runs} x {args.requests:,} (load average {load}):")
    print("")
    print("| tree | us per request (best) | median | x baseline |")
    print("|---|---|---|---|")
    for name, values in results.items():
        values.sort()
        print(
            f"| {name} | {values[0]:.2f} | {values[len(values) // 2]:.2f} | "
            f"{values[0] / base:.2f} |"
        )


if __name__ == "__main__":
    main()
