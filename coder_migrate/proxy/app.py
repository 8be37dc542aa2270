"""Running the proxy: workers, listeners, TLS, the primary link, metrics, shutdown.

``run(settings)`` binds the listeners (``SO_REUSEPORT`` when several workers share them),
starts one uvloop event loop per worker process, and in the first worker keeps the link to
the primary: the v2 registration loop (``me/register`` every 15 s, exit after more than 10
failures in a row, ``me/deregister`` on shutdown) or, for a satellite, nothing but its key.
SIGTERM/SIGINT drain: stop accepting, finish in-flight requests, then stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from coder_migrate import __version__
from coder_migrate.errors import CoderAPIError, ProxyError
from coder_migrate.providers.coder import satellite_key
from coder_migrate.providers.coder.v1 import CoderV1EnvproxyClient, CoderV1SatelliteClient
from coder_migrate.providers.coder.v2 import CoderV2Client, CoderV2ProxyClient
from coder_migrate.proxy.auth import V1AppResolver, V2AppResolver
from coder_migrate.proxy.config import ProxySettings
from coder_migrate.proxy.http1 import RequestHead
from coder_migrate.proxy.metrics import (
    ProxyStats,
    serve_metrics,
    stats_registry,
    write_snapshot,
)
from coder_migrate.proxy.responses import Answer, AppResolver, Target
from coder_migrate.proxy.router import RouteTable
from coder_migrate.proxy.server import ProxyServer

__all__ = [
    "REGISTER_INTERVAL_SECONDS",
    "HealthState",
    "LocalAnswers",
    "PrimaryLink",
    "build_tls_context",
    "load_satellite_key",
    "run",
]

log = logging.getLogger("coder_migrate.proxy")

REGISTER_INTERVAL_SECONDS = 15.0
REGISTER_TIMEOUT_SECONDS = 10.0
MAX_REGISTER_FAILURES = 10
_CLIENT_AUTH_MODES = {
    "none": ssl.CERT_NONE,
    "request": ssl.CERT_OPTIONAL,
    "require-any": ssl.CERT_REQUIRED,
    "verify-if-given": ssl.CERT_OPTIONAL,
    "require-and-verify": ssl.CERT_REQUIRED,
}


@dataclass
class HealthState:
    """What ``/healthz-report`` says (Coder's ProxyHealthReport)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    draining: bool = False


class LocalAnswers:
    """The proxy's own endpoints; bodies that never change are built once."""

    def __init__(
        self,
        settings: ProxySettings,
        health: HealthState,
        key_json: bytes,
        link: PrimaryLink | None = None,
    ) -> None:
        self.health = health
        self.link = link
        self.checked = 0.0
        self.buildinfo = json.dumps(
            {
                "external_url": "https://github.com/coder/coder",
                "version": f"v{__version__}-coder-migrate",
                "dashboard_url": settings.primary_access_url,
                "workspace_proxy": True,
                "agent_api_version": "",
                "deployment_id": "",
            }
        ).encode()
        self.key_json = key_json
        primary = settings.primary_access_url
        self.dashboard = (
            "<!doctype html><html><head><title>Head to the Dashboard</title></head><body>"
            "<h1>Head to the Dashboard</h1><p>This is a workspace proxy; it serves workspace "
            f'apps and terminals only. Go to <a href="{primary}">{primary}</a>.</p>'
            "</body></html>"
        ).encode()

    def answer(self, kind: str, head: RequestHead) -> Answer:
        if kind == "healthz":
            return Answer(200, b"OK", b"text/plain; charset=utf-8")
        if kind == "latency-check":
            return Answer(
                200,
                b"OK",
                b"text/plain; charset=utf-8",
                [(b"Access-Control-Allow-Origin", b"*"), (b"Timing-Allow-Origin", b"*")],
            )
        if kind == "buildinfo":
            return Answer(200, self.buildinfo, b"application/json")
        if kind == "satellite-key":
            return Answer(200, self.key_json, b"application/json")
        return Answer(400, self.dashboard)

    async def health_report(self) -> Answer:
        health = self.health
        now = time.monotonic()
        if self.link is not None and not health.draining and now - self.checked > 1.0:
            self.checked = now
            with contextlib.suppress(ProxyError):
                await self.link.check_primary()
        report = json.dumps({"errors": health.errors, "warnings": health.warnings}).encode()
        return Answer(500 if health.draining else 200, report, b"application/json")


def load_satellite_key(settings: ProxySettings) -> str:
    """The satellite's ECDSA private key: from the setting, or from the key file (created
    with mode 0600 when it does not exist yet)."""
    if settings.satellite_private_key:
        pem = settings.satellite_private_key
    else:
        path = settings.satellite_private_key_file
        assert path is not None
        if not path.exists():
            pem = satellite_key.generate_private_key_pem()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(pem)
            log.info("created satellite key %s", path)
        try:
            pem = path.read_text()
        except OSError as error:
            raise ProxyError(f"{path}: cannot read the satellite key ({error.strerror})") from error
    try:
        satellite_key.public_key_pem(pem)
    except (ValueError, TypeError) as error:
        raise ProxyError("the satellite private key is not a PEM ECDSA P-256 key") from error
    return pem


def build_tls_context(settings: ProxySettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (ssl.SSLError, OSError) as error:
        raise ProxyError(
            f"{settings.tls_cert_file}, {settings.tls_key_file}: cannot load the TLS "
            f"certificate and key ({type(error).__name__})"
        ) from error
    context.verify_mode = _CLIENT_AUTH_MODES[settings.tls_client_auth]
    if settings.tls_client_ca_file is not None:
        context.load_verify_locations(settings.tls_client_ca_file)
    elif context.verify_mode != ssl.CERT_NONE:
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    return context


class PrimaryLink:
    """Registration with a v2 primary, and what it means for the health report."""

    def __init__(self, settings: ProxySettings, health: HealthState) -> None:
        self.settings = settings
        self.health = health
        self.replica_id = str(uuid.uuid4())
        self.client = CoderV2ProxyClient(
            settings.primary_access_url,
            settings.proxy_session_token,
            timeout=REGISTER_TIMEOUT_SECONDS,
        )
        self.failures = 0
        self.registered = False
        self.mesh_key = ""
        self.region_id: int | None = None

    async def check_primary(self) -> None:
        """Errors in the report when the primary's build info fails or says it is a proxy."""
        async with CoderV2Client(
            self.settings.primary_access_url, "", timeout=REGISTER_TIMEOUT_SECONDS
        ) as primary:
            try:
                info = await primary.buildinfo()
            except CoderAPIError as error:
                self.health.errors = [f"failed to get build info from the primary: {error}"]
                return
        if info.workspace_proxy:
            self.health.errors = ["the primary access URL points at a workspace proxy"]
            raise ProxyError(
                f"CODER_PRIMARY_ACCESS_URL ({self.settings.primary_access_url}) points at a "
                "workspace proxy, not at the primary"
            )
        self.health.errors = []
        ours = __version__.split(".")[:2]
        theirs = info.version.lstrip("v").split("-")[0].split(".")[:2]
        self.health.warnings = (
            [f"version mismatch: primary {info.version}, proxy v{__version__}"]
            if theirs != ours and not info.version.startswith("v0.0.0")
            else []
        )

    def registration(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "access_url": settings.access_url,
            "wildcard_hostname": settings.wildcard_access_url,
            "derp_enabled": False,
            "derp_only": False,
            "replica_id": self.replica_id,
            "hostname": socket.gethostname(),
            "replica_error": "",
            "replica_relay_address": "",
            "version": f"v{__version__}",
        }

    async def register_once(self) -> bool:
        try:
            answer = await self.client.register(self.registration())
        except CoderAPIError as error:
            self.failures += 1
            log.warning(
                "registration with the primary failed (%d in a row): %s", self.failures, error
            )
            return False
        self.failures = 0
        mesh_key = answer.derp_mesh_key.get_secret_value()
        if self.registered and (
            mesh_key != self.mesh_key or answer.derp_region_id != self.region_id
        ):
            # Coder restarts the proxy when its mesh key or region changes; so do we.
            raise ProxyError("the primary changed this proxy's mesh key or region; restarting")
        if not self.registered:
            log.info("registered with the primary as replica %s", self.replica_id)
        self.registered = True
        self.mesh_key = mesh_key
        self.region_id = answer.derp_region_id
        return True

    async def loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REGISTER_INTERVAL_SECONDS)
            if stop.is_set():
                return
            await self.check_primary()
            await self.register_once()
            if self.failures > MAX_REGISTER_FAILURES:
                await self.deregister()
                raise ProxyError(f"registration failed {self.failures} times in a row; giving up")

    async def deregister(self) -> None:
        if not self.registered:
            return
        try:
            await self.client.deregister(self.replica_id)
            log.info("deregistered replica %s", self.replica_id)
        except CoderAPIError as error:
            log.warning("deregistration failed: %s", error)
        self.registered = False


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry)


def configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger("coder_migrate")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ProxyError(f"cannot listen on {host}:{port} ({error.strerror})") from error
    sock.listen(4096)
    sock.setblocking(False)
    return sock


@dataclass
class _Upstreams:
    """What the mode decides: the primary as an upstream (satellite) or the v2 link."""

    key_json: bytes = b"{}"
    primary: Target | None = None
    resolver: AppResolver | None = None
    link: PrimaryLink | None = None
    v2_resolver: V2AppResolver | None = None


async def _upstreams(settings: ProxySettings, health: HealthState) -> _Upstreams:
    if settings.mode == "envproxy":
        # Workspace traffic only (ASSUMED): nothing is forwarded to the primary.
        envproxy = CoderV1EnvproxyClient(settings.primary_access_url, settings.envproxy_token)
        return _Upstreams(resolver=V1AppResolver(envproxy, primary_url=settings.primary_access_url))
    if settings.mode == "satellite":
        pem = load_satellite_key(settings)
        public = satellite_key.public_key_pem(pem)
        key_json = json.dumps(
            {"key": public, "fingerprint": satellite_key.fingerprint(public)}
        ).encode()
        primary = urlsplit(settings.primary_access_url)
        tls = primary.scheme == "https"
        assert primary.hostname is not None
        target = Target(
            primary.hostname,
            primary.port or (443 if tls else 80),
            tls=tls,
            server_hostname=primary.hostname,
            strip_credentials=False,
        )
        satellite_client = CoderV1SatelliteClient(settings.primary_access_url, pem)
        resolver = V1AppResolver(satellite_client, primary_url=settings.primary_access_url)
        return _Upstreams(key_json=key_json, primary=target, resolver=resolver)
    link = PrimaryLink(settings, health)
    await link.check_primary()
    v2_resolver = V2AppResolver(
        link.client,
        primary_url=settings.primary_access_url,
        access_url=settings.access_url,
        wildcard_hostname=settings.wildcard_access_url,
    )
    try:
        await v2_resolver.refresh_keys()
    except CoderAPIError as error:
        log.warning("could not fetch the app token keys yet: %s", error)
    return _Upstreams(resolver=v2_resolver, link=link, v2_resolver=v2_resolver)


async def _listen(
    settings: ProxySettings, server: ProxyServer, sockets: list[tuple[socket.socket, bool]]
) -> None:
    tls_context = build_tls_context(settings) if settings.tls_address else None
    for sock, is_tls in sockets:
        listener = await server.loop.create_server(
            server.protocol_factory("https" if is_tls else "http"),
            sock=sock,
            ssl=tls_context if is_tls else None,
            backlog=4096,
        )
        server.servers.append(listener)
    addresses = ", ".join(
        f"{'https' if is_tls else 'http'}://{s.getsockname()[0]}:{s.getsockname()[1]}"
        for s, is_tls in sockets
    )
    log.info("proxy (%s) listening on %s", settings.mode, addresses)
    print(f"coder-migrate proxy listening on {addresses}", flush=True)


async def _tasks(
    upstreams: _Upstreams,
    stats: ProxyStats,
    stop: asyncio.Event,
    first_worker: bool,
    peers: Path | None,
) -> list[asyncio.Task[None]]:
    loop = asyncio.get_running_loop()
    link = upstreams.link
    tasks: list[asyncio.Task[None]] = []
    if link is not None and first_worker:
        if not await link.register_once():
            log.warning("first registration failed; retrying every %ss", REGISTER_INTERVAL_SECONDS)
        tasks.append(loop.create_task(link.loop(stop), name="proxy-register-loop"))
    elif link is not None:
        tasks.append(loop.create_task(_health_loop(link, stop), name="proxy-health-loop"))
    if upstreams.v2_resolver is not None:
        tasks.append(
            loop.create_task(_key_loop(upstreams.v2_resolver, stop), name="proxy-key-loop")
        )
    if peers is not None and not first_worker:
        tasks.append(loop.create_task(_snapshot_loop(stats, peers, stop), name="proxy-metrics"))
    return tasks


async def _serve(
    settings: ProxySettings,
    sockets: list[tuple[socket.socket, bool]],
    first_worker: bool,
    peers: Path | None,
) -> None:
    loop = asyncio.get_running_loop()
    health = HealthState()
    stats = ProxyStats()
    upstreams = await _upstreams(settings, health)
    table = RouteTable(
        mode=settings.mode,
        wildcard_suffix=settings.wildcard_suffix,
        path_apps=not settings.disable_path_apps,
    )
    server = ProxyServer(
        loop=loop,
        table=table,
        limits=settings.limits,
        local=LocalAnswers(settings, health, upstreams.key_json, upstreams.link),
        resolver=upstreams.resolver,
        primary=upstreams.primary,
        stats=stats,
        hardening=settings.hardening,
    )
    await _listen(settings, server, sockets)
    server.start_sweep()
    metrics_server = None
    if settings.prometheus_address is not None and first_worker:
        host, port = settings.prometheus_address
        try:
            metrics_server = await serve_metrics(stats_registry(stats, peers), host, port)
        except OSError as error:
            raise ProxyError(f"cannot serve metrics on {host}:{port} ({error.strerror})") from error
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = await _tasks(upstreams, stats, stop, first_worker, peers)
    stopper = loop.create_task(stop.wait(), name="proxy-stop-wait")
    await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failure = next((t.exception() for t in tasks if t.done() and t.exception()), None)
    log.info("draining connections (up to %ss)", settings.limits.drain_timeout)
    health.draining = True
    stop.set()
    for task in tasks:
        task.cancel()
    await server.drain(settings.limits.drain_timeout)
    if upstreams.link is not None:
        if first_worker:
            await upstreams.link.deregister()
        await upstreams.link.client.aclose()
    if metrics_server is not None:
        metrics_server.close()
    stopper.cancel()
    if failure is not None:
        raise failure


async def _health_loop(link: PrimaryLink, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REGISTER_INTERVAL_SECONDS)
        if not stop.is_set():
            await link.check_primary()


async def _snapshot_loop(stats: ProxyStats, peers: Path, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            write_snapshot(stats, peers)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _key_loop(resolver: V2AppResolver, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 60.0)
        try:
            await resolver.refresh_keys()
        except CoderAPIError as error:
            log.warning("refreshing the app token keys failed: %s", error)


def _worker(
    settings: ProxySettings,
    sockets: list[tuple[socket.socket, bool]],
    first: bool,
    peers: Path | None = None,
) -> None:
    import gc

    import uvloop

    # Everything loaded so far lives as long as the process: keep the collector off it,
    # and collect less often (the data path makes few cycles).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)

    uvloop.run(_serve(settings, sockets, first, peers))


def _listen_sockets(settings: ProxySettings, reuse_port: bool) -> list[tuple[socket.socket, bool]]:
    sockets: list[tuple[socket.socket, bool]] = []
    if settings.http_address is not None:
        sockets.append((_bind(*settings.http_address, reuse_port), False))
    if settings.tls_address is not None:
        sockets.append((_bind(*settings.tls_address, reuse_port), True))
    return sockets


def run(settings: ProxySettings) -> None:
    """Serve until SIGTERM/SIGINT; raises :class:`ProxyError` when it cannot."""
    configure_logging(settings.verbose)
    if settings.tls_address is not None:
        build_tls_context(settings)  # fail before forking
    if settings.mode == "satellite":
        load_satellite_key(settings)
    reuse_port = settings.workers > 1
    # Workers 2..N bind their own sockets with SO_REUSEPORT so the kernel spreads
    # connections across processes; bind here first so a busy port fails early.
    first_sockets = _listen_sockets(settings, reuse_port)
    children: list[int] = []
    peers: Path | None = None
    if settings.workers > 1:
        # Other workers' metrics reach the first worker's endpoint through this directory.
        shm = Path("/dev/shm")  # noqa: S108 - mkdtemp below makes a private 0700 directory
        peers = Path(
            tempfile.mkdtemp(prefix="coder-migrate-proxy-", dir=shm if shm.is_dir() else None)
        )
        bound = [(s.getsockname()[0], s.getsockname()[1]) for s, _ in first_sockets]
        for _ in range(settings.workers - 1):
            pid = os.fork()
            if pid == 0:
                for s, _tls in first_sockets:
                    s.close()
                code = 0
                try:
                    sockets = [
                        (_bind(host, port, True), is_tls)
                        for (host, port), (_s, is_tls) in zip(bound, first_sockets, strict=True)
                    ]
                    _worker(settings, sockets, first=False, peers=peers)
                except BaseException:
                    log.exception("worker failed")
                    code = 1
                os._exit(code)
            children.append(pid)
    try:
        _worker(settings, first_sockets, first=True, peers=peers)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        if peers is not None:
            shutil.rmtree(peers, ignore_errors=True)
