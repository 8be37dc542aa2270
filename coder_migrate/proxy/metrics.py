"""Prometheus metrics, kept cheap on the hot path.

The data path only adds to plain integers and lists (:class:`ProxyStats`); a collector turns
them into Coder's metric families when Prometheus scrapes. Names follow Coder's
``coderd/httpmw/prometheus.go``: ``coderd_api_requests_processed_total{code,method,path}``,
``coderd_api_concurrent_requests``, ``coderd_api_concurrent_websockets``,
``coderd_api_websocket_durations_seconds``, ``coderd_api_request_latencies_seconds``; plus
``coder_proxy_relayed_bytes_total{direction}``, ``coder_proxy_upstream_errors_total{kind}``
and ``coder_proxy_connections``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

__all__ = [
    "LATENCY_BUCKETS",
    "PEER_STALE_SECONDS",
    "WEBSOCKET_BUCKETS",
    "ProxyStats",
    "serve_metrics",
    "stats_registry",
    "write_snapshot",
]

log = logging.getLogger("coder_migrate.proxy")

# Coder's buckets (coderd/httpmw/prometheus.go).
# With several workers, each writes its counters here every second; the first sums them.
PEER_STALE_SECONDS = 10.0
LATENCY_BUCKETS = (0.001, 0.005, 0.010, 0.025, 0.050, 0.100, 0.500, 1.0, 5.0, 10.0, 30.0)
WEBSOCKET_BUCKETS = (0.001, 1.0, 60.0, 3600.0, 54000.0, 108000.0)


class _Histogram:
    __slots__ = ("buckets", "counts", "total")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def add(self, counts: list[int], total: float) -> None:
        if len(counts) == len(self.counts):
            self.counts = [a + int(b) for a, b in zip(self.counts, counts, strict=True)]
            self.total += float(total)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class _RouteCounts:
    """The counters of one (method, path): answers by status code and the latency histogram
    in nanoseconds (integers: no float object per request)."""

    __slots__ = ("codes", "counts", "total_ns")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total_ns = 0


# LATENCY_BUCKETS in nanoseconds, as a list: a tuple of floats would be boxed into a new
# tuple of 11 float objects on every use in the compiled build.
_LATENCY_BOUNDS_NS: Final[list[int]] = [round(bound * 1e9) for bound in LATENCY_BUCKETS]


class ProxyStats:
    """Counters the data path updates; read by :class:`_StatsCollector` on scrape."""

    def __init__(self) -> None:
        # path -> method -> counts: metric paths and methods are interned constants, so
        # two lookups by string beat hashing a (code, method, path) tuple per request.
        self.routes: dict[str, dict[str, _RouteCounts]] = {}
        self.websocket_durations: dict[str, _Histogram] = {}
        self.concurrent_requests = 0
        self.concurrent_websockets = 0
        self.connections = 0
        self.bytes_to_upstream = 0
        self.bytes_to_client = 0
        self.upstream_errors: dict[str, int] = {}

    def request_done(self, code: int, method: str, path: str, elapsed_ns: int) -> None:
        """One answered request; ``elapsed_ns`` from ``time.perf_counter_ns()``."""
        methods = self.routes.get(path)
        if methods is None:
            methods = self.routes[path] = {}
        counts = methods.get(method)
        if counts is None:
            counts = methods[method] = _RouteCounts()
        codes = counts.codes
        codes[code] = codes.get(code, 0) + 1
        # bisect_left by hand: most requests end in the first bucket.
        index = 0
        for bound in _LATENCY_BOUNDS_NS:
            if elapsed_ns <= bound:
                break
            index += 1
        counts.counts[index] += 1
        counts.total_ns += elapsed_ns

    @property
    def requests(self) -> dict[tuple[int, str, str], int]:
        """Answered requests by (code, method, path)."""
        return {
            (code, method, path): count
            for path, methods in self.routes.items()
            for method, counts in methods.items()
            for code, count in counts.codes.items()
        }

    @property
    def latencies(self) -> dict[tuple[str, str], _Histogram]:
        """Latency histograms (seconds) by (method, path)."""
        found: dict[tuple[str, str], _Histogram] = {}
        for path, methods in self.routes.items():
            for method, counts in methods.items():
                histogram = _Histogram(LATENCY_BUCKETS)
                histogram.counts = list(counts.counts)
                histogram.total = counts.total_ns / 1e9
                found[(method, path)] = histogram
        return found

    def websocket_done(self, path: str, seconds: float) -> None:
        histogram = self.websocket_durations.get(path)
        if histogram is None:
            histogram = self.websocket_durations[path] = _Histogram(WEBSOCKET_BUCKETS)
        histogram.observe(seconds)

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + 1

    def _counts(self, method: str, path: str) -> _RouteCounts:
        methods = self.routes.setdefault(path, {})
        counts = methods.get(method)
        if counts is None:
            counts = methods[method] = _RouteCounts()
        return counts

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able counters, for other workers' stats to be summed at scrape time."""
        return {
            "requests": [[c, m, p, n] for (c, m, p), n in self.requests.items()],
            "latencies": [[m, p, h.counts, h.total] for (m, p), h in self.latencies.items()],
            "websockets": [[p, h.counts, h.total] for p, h in self.websocket_durations.items()],
            "concurrent_requests": self.concurrent_requests,
            "concurrent_websockets": self.concurrent_websockets,
            "connections": self.connections,
            "bytes_to_upstream": self.bytes_to_upstream,
            "bytes_to_client": self.bytes_to_client,
            "upstream_errors": dict(self.upstream_errors),
        }

    def add(self, snapshot: dict[str, Any]) -> None:
        """Add another worker's :meth:`snapshot` into these counters."""
        for code, method, path, count in snapshot["requests"]:
            route = self._counts(str(method), str(path))
            route.codes[int(code)] = route.codes.get(int(code), 0) + int(count)
        for method, path, counts, total in snapshot["latencies"]:
            route = self._counts(str(method), str(path))
            if len(counts) == len(route.counts):
                route.counts = [a + int(b) for a, b in zip(route.counts, counts, strict=True)]
                route.total_ns += round(float(total) * 1e9)
        for path, counts, total in snapshot["websockets"]:
            histogram = self.websocket_durations.setdefault(path, _Histogram(WEBSOCKET_BUCKETS))
            histogram.add(counts, total)
        self.concurrent_requests += int(snapshot["concurrent_requests"])
        self.concurrent_websockets += int(snapshot["concurrent_websockets"])
        self.connections += int(snapshot["connections"])
        self.bytes_to_upstream += int(snapshot["bytes_to_upstream"])
        self.bytes_to_client += int(snapshot["bytes_to_client"])
        for kind, count in snapshot["upstream_errors"].items():
            self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + int(count)


class _StatsCollector(Collector):
    def __init__(self, stats: ProxyStats, peers: Path | None) -> None:
        self.stats = stats
        self.peers = peers

    def _merged(self) -> ProxyStats:
        if self.peers is None:
            return self.stats
        merged = ProxyStats()
        merged.add(self.stats.snapshot())
        now = time.time()
        for path in self.peers.glob("*.json"):
            try:
                if now - path.stat().st_mtime > PEER_STALE_SECONDS:
                    continue  # a worker that stopped writing is gone
                merged.add(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return merged

    def collect(self) -> Iterator[Metric]:
        s = self._merged()
        processed = CounterMetricFamily(
            "coderd_api_requests_processed",
            "The total number of processed API requests",
            labels=["code", "method", "path"],
        )
        for (code, method, path), count in list(s.requests.items()):
            processed.add_metric([str(code), method, path], count)
        yield processed
        yield GaugeMetricFamily(
            "coderd_api_concurrent_requests",
            "The number of concurrent API requests.",
            value=s.concurrent_requests,
        )
        yield GaugeMetricFamily(
            "coderd_api_concurrent_websockets",
            "The total number of concurrent API websockets.",
            value=s.concurrent_websockets,
        )
        durations = HistogramMetricFamily(
            "coderd_api_websocket_durations_seconds",
            "Websocket duration distribution of requests in seconds.",
            labels=["path"],
        )
        for path, histogram in list(s.websocket_durations.items()):
            durations.add_metric([path], histogram.cumulative(), histogram.total)
        yield durations
        latencies = HistogramMetricFamily(
            "coderd_api_request_latencies_seconds",
            "Latency distribution of requests in seconds.",
            labels=["method", "path"],
        )
        for (method, path), histogram in list(s.latencies.items()):
            latencies.add_metric([method, path], histogram.cumulative(), histogram.total)
        yield latencies
        relayed = CounterMetricFamily(
            "coder_proxy_relayed_bytes",
            "Bytes relayed between clients and workspaces or the primary.",
            labels=["direction"],
        )
        relayed.add_metric(["to_upstream"], s.bytes_to_upstream)
        relayed.add_metric(["to_client"], s.bytes_to_client)
        yield relayed
        errors = CounterMetricFamily(
            "coder_proxy_upstream_errors",
            "Upstream failures by kind (refused, timeout, reset, invalid).",
            labels=["kind"],
        )
        for kind, count in list(s.upstream_errors.items()):
            errors.add_metric([kind], count)
        yield errors
        yield GaugeMetricFamily(
            "coder_proxy_connections", "Open client connections.", value=s.connections
        )


def stats_registry(stats: ProxyStats, peers: Path | None = None) -> CollectorRegistry:
    """The registry the metrics endpoint serves; ``peers`` holds other workers' snapshots."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats, peers))
    ProcessCollector(registry=registry)
    return registry


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> asyncio.Server:
    """A minimal HTTP endpoint for ``/metrics`` (and ``/``) on the Prometheus address."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            request_line = head.split(b"\r\n", 1)[0].split(b" ")
            path = request_line[1].split(b"?")[0] if len(request_line) >= 2 else b""
            if path in (b"/metrics", b"/"):
                body = generate_latest(registry)
                status = b"200 OK"
                content_type = b"text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, content_type = b"not found\n", b"404 Not Found", b"text/plain"
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + content_type
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, reuse_address=True)


def write_snapshot(stats: ProxyStats, directory: Path) -> None:
    """Write this worker's counters atomically as ``<pid>.json`` in ``directory``."""
    target = directory / f"{os.getpid()}.json"
    temporary = directory / f".{os.getpid()}.tmp"
    temporary.write_text(json.dumps(stats.snapshot()))
    temporary.replace(target)
