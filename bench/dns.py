"""Benchmark of the GeoDNS records on PowerDNS, all on loopback, in one run.

Starts a private PowerDNS 4.7 (sqlite3 backend, LUA records, ECS; caches at their defaults
and ``lua-health-checks-interval`` as given, 5 s by default as in production) and one
``/healthz`` endpoint per region, then measures:

1. Time to answer: from the start of ``apply_dns_changes`` to the first correct ECS answer of
   the shared hostname from a region's test subnet, against the same for a plain A record
   (the region's own hostname) applied in the same call: the baseline. Each round uses a
   new health port, so the health check starts cold as after a real first deploy.
2. Time to all green: from the start of ``apply_dns_changes`` to the end of apply's verify
   step (``verify_dns``: every region's health check warmed, every answer of ``dns check``
   as planned), against the apply alone in the same round: what ``apply`` now takes before
   it says "complete", so that a ``dns check`` right after it is green.
3. Queries per second with ``dnsperf`` (bounded: ``--duration`` seconds per run, one thread,
   ``--clients`` clients): the LUA record with an ECS option from a region's subnet against a
   plain A record without script and a minimal LUA record (one fixed address: PowerDNS'
   per-query Lua cost without our script), same server, rounds interleaved.

    .venv/bin/python bench/dns.py [--rounds 3] [--duration 5] [--clients 4]
                                  [--interval 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This file is named dns.py: drop its own directory from the path so ``import dns`` finds
# dnspython, and put the repository first for coder_migrate and the test fixtures.
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from coder_migrate.dns import apply_dns_changes, plan_dns  # noqa: E402
from coder_migrate.dns.verify import verify_dns  # noqa: E402
from coder_migrate.inventory.model import Topology  # noqa: E402
from coder_migrate.providers.dns import PowerDnsAdapter  # noqa: E402
from tests.fixtures.dns import (  # noqa: E402
    LAB_ZONE,
    REGIONS,
    HealthEndpoint,
    PowerDnsServer,
    ecs_answer,
    free_loopback_port,
    lab_topology_data,
)

SHARED = f"coder.{LAB_ZONE}"
REGION = "eu-west"
POLL_SECONDS = 0.01
ANSWER_TIMEOUT_SECONDS = 60.0


def _topology(server: PowerDnsServer, port: int) -> Topology:
    return Topology.model_validate(
        lab_topology_data(
            {"provider": "powerdns", "powerdns": {"api_url": server.api_url,
                                                  "api_key": {"env": "BENCH_PDNS_API_KEY"},
                                                  "nameservers": [server.nameserver]}},
            health_port=port,
        )
    )


def _first_answer(server: PowerDnsServer, name: str, subnet: str, expected: list[str],
                  start: float) -> float:
    while time.monotonic() - start < ANSWER_TIMEOUT_SECONDS:
        if ecs_answer(server.nameserver, name, subnet) == expected:
            return time.monotonic() - start
        time.sleep(POLL_SECONDS)
    raise SystemExit(f"{name} never answered {expected} from {subnet}")


@contextlib.contextmanager
def _healthy_regions() -> Iterator[int]:
    """Every region's health endpoint up on a new port (a cold health check); the port."""
    port = free_loopback_port()
    endpoints = [HealthEndpoint(s["target"], port) for s in REGIONS.values()]
    for endpoint in endpoints:
        endpoint.start()
    try:
        yield port
    finally:
        for endpoint in endpoints:
            endpoint.stop()


def time_to_answer(server: PowerDnsServer, rounds: int) -> list[tuple[float, float]]:
    """Per round: (seconds to the shared name's correct answer, to the plain A's answer)."""
    spec = REGIONS[REGION]
    results = []
    for _ in range(rounds):
        server.reset_zone()
        with _healthy_regions() as port:
            topology = _topology(server, port)

            async def apply(topology: Topology) -> float:
                async with PowerDnsAdapter(
                    api_url=server.api_url, api_key=server.api_key, zone=LAB_ZONE
                ) as adapter:
                    plan = await plan_dns(topology, adapter)
                    start = time.monotonic()
                    await apply_dns_changes(adapter, plan.changes)
                    return start

            start = asyncio.run(apply(topology))
            plain = _first_answer(
                server, f"coder-{REGION}.{LAB_ZONE}", "100.64.0.1/32", [spec["target"]], start
            )
            lua = _first_answer(server, SHARED, spec["test"], [spec["target"]], start)
            results.append((lua, plain))
    return results


def _ecs_option(subnet: str) -> str:
    """dnsperf's ``-E code:hex`` for an EDNS Client Subnet option (RFC 7871)."""
    network = ipaddress.ip_network(subnet, strict=False)
    prefix = network.prefixlen
    address = network.network_address.packed[: (prefix + 7) // 8]
    return f"8:0001{prefix:02x}00{address.hex()}"


def dnsperf(server: PowerDnsServer, name: str, duration: int, clients: int,
            subnet: str | None, workdir: Path) -> float:
    data = workdir / f"{name}.txt"
    data.write_text(f"{name} A\n", encoding="utf-8")
    command = [
        "dnsperf", "-s", "127.0.0.1", "-p", str(server.dns_port), "-d", str(data),
        "-l", str(duration), "-c", str(clients), "-T", "1", "-q", "64",
    ]
    if subnet is not None:
        command += ["-E", _ecs_option(subnet)]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=duration + 30
    ).stdout
    lost = next(line for line in output.splitlines() if "Queries lost" in line)
    for line in output.splitlines():
        if "Queries per second" in line:
            return float(line.split(":")[1].split()[0])
    raise SystemExit(f"dnsperf printed no rate ({lost.strip()}):\n{output}")


def time_to_green(server: PowerDnsServer, rounds: int) -> list[tuple[float, float]]:
    """Per round: (seconds from apply start to the end of the verify step, apply alone)."""
    results = []
    for _ in range(rounds):
        server.reset_zone()
        with _healthy_regions() as port:
            topology = _topology(server, port)

            async def apply_and_verify(topology: Topology) -> tuple[float, float]:
                async with PowerDnsAdapter(
                    api_url=server.api_url, api_key=server.api_key, zone=LAB_ZONE
                ) as adapter:
                    plan = await plan_dns(topology, adapter)
                    start = time.monotonic()
                    await apply_dns_changes(adapter, plan.changes)
                    applied = time.monotonic() - start
                outcome = await verify_dns(topology, timeout=ANSWER_TIMEOUT_SECONDS)
                if not outcome.ok or outcome.skipped:
                    raise SystemExit(f"verify failed: {outcome}")
                return time.monotonic() - start, applied

            results.append(asyncio.run(apply_and_verify(topology)))
    return results


def throughput(server: PowerDnsServer, args: argparse.Namespace,
               workdir: Path) -> dict[str, list[float]]:
    """Queries per second of the plain A, a minimal LUA record and the shared-name LUA."""
    with _healthy_regions() as port:
        server.reset_zone()

        async def apply() -> None:
            async with PowerDnsAdapter(
                api_url=server.api_url, api_key=server.api_key, zone=LAB_ZONE
            ) as adapter:
                plan = await plan_dns(_topology(server, port), adapter)
                await apply_dns_changes(adapter, plan.changes)

        asyncio.run(apply())
        spec = REGIONS[REGION]
        _first_answer(server, SHARED, spec["test"], [spec["target"]], time.monotonic())
        # The smallest LUA record: what PowerDNS' per-query Lua costs without our script.
        minimal = f"minimal-lua.{LAB_ZONE}"
        server.put_rrset(minimal, "LUA", 60, [f"A \"'{spec['target']}'\""])
        rates: dict[str, list[float]] = {"plain": [], "minimal": [], "lua": []}
        for _ in range(args.rounds):
            rates["plain"].append(dnsperf(server, f"coder-{REGION}.{LAB_ZONE}", args.duration,
                                          args.clients, None, workdir))
            rates["minimal"].append(dnsperf(server, minimal, args.duration, args.clients,
                                            spec["test"], workdir))
            rates["lua"].append(dnsperf(server, SHARED, args.duration, args.clients,
                                        spec["test"], workdir))
        return rates


def _median_ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(numerator) / statistics.median(denominator)


def render(args: argparse.Namespace, answers: list[tuple[float, float]],
           green: list[tuple[float, float]], rates: dict[str, list[float]]) -> str:
    lua_times = [a for a, _ in answers]
    plain_times = [b for _, b in answers]
    green_times = [g for g, _ in green]
    apply_times = [a for _, a in green]
    plain, minimal, lua = rates["plain"], rates["minimal"], rates["lua"]
    lines = [
        f"PowerDNS 4.7, loopback, enable-lua-records={args.lua_mode}, "
        f"lua-health-checks-interval={args.interval}s, "
        f"{args.rounds} rounds, dnsperf {args.duration}s x {args.clients} clients",
        "",
        "| measure | plain A (baseline) | LUA shared name | ratio LUA/plain |",
        "|---|---|---|---|",
        f"| apply -> first correct answer, median s | {statistics.median(plain_times):.3f} | "
        f"{statistics.median(lua_times):.3f} | {_median_ratio(lua_times, plain_times):.1f}x |",
        f"| apply -> first correct answer, max s | {max(plain_times):.3f} | "
        f"{max(lua_times):.3f} | |",
        f"| queries/s, median | {statistics.median(plain):,.0f} | "
        f"{statistics.median(lua):,.0f} | {_median_ratio(lua, plain):.2f} |",
        f"| queries/s, all rounds | {', '.join(f'{q:,.0f}' for q in plain)} | "
        f"{', '.join(f'{q:,.0f}' for q in lua)} | |",
        "",
        "| apply start -> | apply alone (baseline) | verify done: every answer green | ratio |",
        "|---|---|---|---|",
        f"| median s | {statistics.median(apply_times):.3f} | "
        f"{statistics.median(green_times):.3f} | {_median_ratio(green_times, apply_times):.1f}x |",
        f"| max s | {max(apply_times):.3f} | {max(green_times):.3f} | |",
        "",
        "| queries/s, median | plain A | minimal LUA (one address) | shared-name LUA |",
        "|---|---|---|---|",
        f"| absolute | {statistics.median(plain):,.0f} | "
        f"{statistics.median(minimal):,.0f} | {statistics.median(lua):,.0f} |",
        f"| ratio to plain A | 1.00 | {_median_ratio(minimal, plain):.2f} | "
        f"{_median_ratio(lua, plain):.2f} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per dnsperf run")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--interval", type=int, default=5, help="lua-health-checks-interval")
    parser.add_argument("--lua-mode", choices=("yes", "shared"), default="yes",
                        help="enable-lua-records of the server")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is not installed (Debian package dnsperf; scripts/bootstrap)")

    with tempfile.TemporaryDirectory(prefix="bench-dns-") as temporary:
        workdir = Path(temporary)
        server = PowerDnsServer(
            workdir / "pdns", health_check_interval=args.interval, lua_records=args.lua_mode
        )
        server.start()
        os.environ["BENCH_PDNS_API_KEY"] = server.api_key
        try:
            answers = time_to_answer(server, args.rounds)
            green = time_to_green(server, args.rounds)
            rates = throughput(server, args, workdir)
        finally:
            server.stop()
    text = render(args, answers, green, rates)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
