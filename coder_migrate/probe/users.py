"""The probe's synthetic users: one per region, each on its test workspace's app.

Every :data:`REQUEST_INTERVAL` seconds a user requests its region's test workspace app
(``coder_test_workspace``) through the address users use, and keeps a websocket to the app's
echo open through it (sending a message every :data:`REQUEST_INTERVAL` seconds; one that
closes or stops echoing is reopened at once; when the address changes, the socket is closed
and opened on the new one, as a reloaded page does, which is no drop). The address is the one
the primary gives users:
while the workspace's provider runs without Networking v2, the provider's envproxy
(``envproxy_access_url`` with its ``devurl_host``); once it is on, the region's satellite
(``coder_access_url`` with ``coder_wildcard_host``). The users read the providers from the
primary every :data:`ROUTE_REFRESH` seconds (the last answer holds while the primary does
not answer).

:class:`ProbeRun` runs them in a thread of its own with its own event loop, so the operation
it watches (which may block its own loop in places) cannot delay a request and show as a gap
users never saw. The session token is sent in headers only; failures are described by status
code or exception class, never by the exception's text.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

import aiohttp

from coder_migrate.engine.journal import JournalEntry
from coder_migrate.errors import CoderMigrateError, ConfigError
from coder_migrate.inventory import Topology
from coder_migrate.probe.report import (
    RECONNECT_GRACE,
    Drop,
    ProbeReport,
    Sample,
    StepLog,
    build_report,
)
from coder_migrate.providers.coder.transport import RetryPolicy
from coder_migrate.providers.coder.v1 import CoderV1Client

__all__ = [
    "APP",
    "REQUEST_INTERVAL",
    "ROUTE_REFRESH",
    "ProbeRun",
    "Route",
    "Target",
    "targets_of",
]

REQUEST_INTERVAL = 0.2
ROUTE_REFRESH = 1.0
REQUEST_TIMEOUT = 5.0
#: Seconds :meth:`ProbeRun.start` waits for every user's first answer and websocket.
READY_TIMEOUT = 15.0
#: Seconds the users get to close their connections when the probe stops.
STOP_GRACE = 1.0
#: The app and agent of the test workspace the users open (the lab's workspaces serve it).
APP = "code-server--main"
_NO_RETRY = RetryPolicy(attempts=1)
ENVPROXY = "envproxy"
SATELLITE = "satellite"


@dataclass(frozen=True)
class Route:
    """Where a region's users reach the app now: base URL and the Host header."""

    name: str
    base_url: str
    host: str


@dataclass(frozen=True)
class Target:
    """A region's synthetic user: its test workspace and the satellite address."""

    region: str
    label: str
    """The app's host label, ``<app>--<agent>--<workspace>--<owner>``."""
    provider: str
    satellite: Route

    def envproxy(self, access_url: str, devurl_host: str) -> Route:
        return Route(ENVPROXY, access_url.rstrip("/"),
                     self.label + devurl_host.removeprefix("*"))


def targets_of(topology: Topology) -> list[Target]:
    """One target per region with a test workspace; a clear error when there is none."""
    if topology.generation != "v1":
        raise ConfigError(f"{topology.source}: the probe follows Coder v1 regions "
                          "(coder_generation: v1); this inventory is "
                          f"{topology.generation}")
    targets = []
    for region in topology.regions:
        workspace = region.test_workspace
        if workspace is None or region.wildcard_host is None or not region.workspace_providers:
            continue
        label = f"{APP}--{workspace.name}--{workspace.owner}"
        targets.append(Target(
            region=region.name, label=label, provider=region.workspace_providers[0].name,
            satellite=Route(SATELLITE, region.access_url.rstrip("/"),
                            label + region.wildcard_host.removeprefix("*")),
        ))
    if not targets:
        raise ConfigError(f"{topology.source}: no region has coder_test_workspace, "
                          "coder_wildcard_host and coder_workspace_providers: the probe has "
                          "no app to open")
    return targets


class _Users:
    """The users' loop (runs inside :class:`ProbeRun`'s thread)."""

    def __init__(self, targets: list[Target], primary_url: str, token: str) -> None:
        self.targets = targets
        self.primary_url = primary_url
        self.token = token
        self.routes: dict[str, Route] = {}
        self.samples: list[Sample] = []
        self.drops: list[Drop] = []
        self.down: dict[str, tuple[float, str, str]] = {}
        self.stopping = asyncio.Event()
        self.routed = asyncio.Event()
        self.answered: set[str] = set()
        self.opened: set[str] = set()
        self.ready = threading.Event()
        """Every user had its first answer and opened its websocket once (logged in)."""

    def _check_ready(self) -> None:
        if len(self.answered) == len(self.opened) == len(self.targets):
            self.ready.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            refresher = asyncio.create_task(self._refresh_routes())
            await self.routed.wait()
            users = [asyncio.create_task(loop(session, t)) for t in self.targets
                     for loop in (self._requests, self._websocket)]
            await self.stopping.wait()
            tasks = [*users, refresher]
            for task in tasks:
                task.cancel()
            # A cancelled websocket still closes politely, waiting up to aiohttp's 10 s for
            # the peer's close frame; users leaving must not hold the operation's exit: what
            # has not closed within a second is cancelled again, which aborts the close.
            _, closing = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for task in closing:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _refresh_routes(self) -> None:
        async with CoderV1Client(self.primary_url, self.token, timeout=REQUEST_TIMEOUT,
                                 retry=_NO_RETRY) as primary:
            while True:
                try:
                    providers = {p.name: p for p in await primary.list_providers()}
                except CoderMigrateError:
                    providers = None  # the primary is away: users keep the address they had
                for target in self.targets:
                    provider = providers.get(target.provider) if providers else None
                    if provider is not None:
                        self.routes[target.region] = (
                            target.satellite if provider.enable_net_v2
                            or not provider.envproxy_access_url
                            else target.envproxy(provider.envproxy_access_url,
                                                 provider.devurl_host or "*.")
                        )
                    elif providers is not None or target.region not in self.routes:
                        self.routes.setdefault(target.region, target.satellite)
                self.routed.set()
                await asyncio.sleep(ROUTE_REFRESH)

    def _headers(self, route: Route) -> dict[str, str]:
        return {"Host": route.host, "Session-Token": self.token}

    async def _requests(self, session: aiohttp.ClientSession, target: Target) -> None:
        next_at = time.monotonic()
        while True:
            route = self.routes[target.region]
            sent = time.monotonic()
            ok, reason = False, ""
            try:
                async with session.get(f"{route.base_url}/probe", headers=self._headers(route),
                                       allow_redirects=False) as response:
                    await response.read()
                    ok = response.status == 200
                    reason = "" if ok else f"HTTP {response.status}"
            except TimeoutError:
                reason = f"no answer within {REQUEST_TIMEOUT:.0f} s"
            except aiohttp.ClientError as error:
                reason = type(error).__name__
            self.samples.append(Sample(target.region, sent, time.monotonic() - sent, ok,
                                       route.name, reason))
            if ok and target.region not in self.answered:
                self.answered.add(target.region)
                self._check_ready()
            next_at = max(next_at + REQUEST_INTERVAL, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    async def _websocket(self, session: aiohttp.ClientSession, target: Target) -> None:
        region = target.region
        opening = True  # a first open that fails and is not open within the grace is a drop
        while True:
            route = self.routes[region]
            try:
                async with session.ws_connect(f"{route.base_url}/ws/echo",
                                              headers=self._headers(route)) as socket:
                    self._reopened(region, route, opening)
                    opening = False
                    self.opened.add(region)
                    self._check_ready()
                    count = 0
                    while True:
                        count += 1
                        await socket.send_str(f"probe {count}")
                        message = await asyncio.wait_for(socket.receive(), REQUEST_TIMEOUT)
                        if message.type != aiohttp.WSMsgType.TEXT:
                            self._dropped(region, f"closed ({message.type.name})", route)
                            break
                        await asyncio.sleep(REQUEST_INTERVAL)
                        if self.routes[region] != route:
                            break  # the user's page moves to the new address: no drop
            except TimeoutError:
                self._dropped(region, f"no echo within {REQUEST_TIMEOUT:.0f} s", route)
            except (aiohttp.ClientError, ConnectionError) as error:
                self._dropped(region, type(error).__name__, route)
            await asyncio.sleep(0.05)

    def _dropped(self, region: str, reason: str, route: Route) -> None:
        self.down.setdefault(region, (time.monotonic(), reason, route.name))

    def _reopened(self, region: str, route: Route, opening: bool) -> None:
        down = self.down.pop(region, None)
        if down is None:
            return
        now = time.monotonic()
        if not opening or now - down[0] > RECONNECT_GRACE:
            self.drops.append(Drop(region, down[0], now, down[2] or route.name, down[1]))

    def open_drops(self) -> list[Drop]:
        """The sockets down now: drops never reconnected."""
        return [Drop(region, at, None, route or self.routes.get(region, Route("-", "", "")).name,
                     reason) for region, (at, reason, route) in self.down.items()]


class ProbeRun:
    """The synthetic users in a thread: :meth:`start`, then :meth:`stop` for the report."""

    def __init__(self, targets: list[Target], primary_url: str, token: str) -> None:
        self.targets = targets
        self.steps = StepLog()
        self._users = _Users(self.targets, primary_url, token)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self.start_time = 0.0
        self.wall_offset = time.time() - time.monotonic()

    @classmethod
    def of(cls, topology: Topology, token: str) -> ProbeRun:
        """The users of *topology*'s regions (:func:`targets_of`), asking its primary."""
        return cls(targets_of(topology), topology.primary.access_url, token)

    def progress(self, region: str, phase: str, text: str) -> None:
        """A runner progress event (:data:`coder_migrate.engine.change.Progress`)."""
        self.steps.record(region, phase, text, time.monotonic())

    def start(self, *, ready_timeout: float = READY_TIMEOUT) -> None:
        """Start the users; returns once each had its first answer and opened its websocket
        (a user logging in: not part of the report), or after *ready_timeout*, when the
        report starts anyway and counts what is not answering as failed."""
        self._thread = threading.Thread(target=self._main, name="coder-migrate-probe",
                                        daemon=True)
        self._thread.start()
        self._users.ready.wait(ready_timeout)
        self.start_time = time.monotonic()

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._users.stopping = asyncio.Event()
            self._users.routed = asyncio.Event()
            await self._users.run()

        try:
            asyncio.run(main())
        except BaseException as error:  # reported by stop(), never lost in the thread
            self._failure = error
        finally:
            self._users.ready.set()  # start() need not wait out its timeout

    def replay_journal(self, entries: Iterable[JournalEntry]) -> bool:
        """Take the steps from the engine's journal instead of live progress events (the
        probe ran beside an apply of another process, e.g. the migrate playbook): each
        change started, done or failed since the users came online, to the second. Returns
        whether any change fell in the window; the operation then ends with its last entry."""
        window = [
            (dt.datetime.fromisoformat(entry.at).timestamp() - self.wall_offset, entry)
            for entry in entries
            if entry.phase in ("started", "done", "failed")
        ]
        # Entries have whole seconds: one stamped in the second the users came online counts.
        window = [(at, e) for at, e in window if at >= self.start_time - 1.0]
        for at, entry in sorted(window, key=lambda item: item[0]):
            self.steps.record(entry.region, entry.phase, entry.detail, at)
        if window:
            self.steps.finish(max(at for at, _entry in window) + 1.0)
        return bool(window)

    def finish_operation(self) -> None:
        """The operation ended: what follows is "after"."""
        self.steps.finish(time.monotonic())

    def stop(self, *, phased: bool = True) -> ProbeReport:
        """Stop the users (within a few seconds) and report what they saw."""
        end = time.monotonic()
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._users.stopping.set)
            self._thread.join(REQUEST_TIMEOUT * 2)
        if self._failure is not None and not isinstance(self._failure, asyncio.CancelledError):
            raise CoderMigrateError(f"the probe stopped: {type(self._failure).__name__}")
        begin = self.start_time
        samples = [s for s in list(self._users.samples) if begin <= s.sent < end]
        drops = [replace(d, at=max(d.at, begin))
                 for d in [*self._users.drops, *self._users.open_drops()]
                 if d.reconnected is None or d.reconnected > begin]
        return build_report([t.region for t in self.targets], samples, drops, self.steps,
                            start=self.start_time, end=end, wall_offset=self.wall_offset,
                            phased=phased)
