"""The probe's users against stand-ins on loopback sockets: a primary answering the
providers (Networking v2 off, then on), an envproxy and a satellite answering the app and its
echo websocket. Checks the address users take, the report's counts and the token's absence."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from coder_migrate.engine.journal import JournalEntry
from coder_migrate.probe.users import ENVPROXY, SATELLITE, ProbeRun, Route, Target

TOKEN = "probe-session-4f2a9c"
APP_LABEL = "code-server--main--migration-check-us-east--platform-bot"


@dataclass
class Stand:
    """The stand-ins' state, changed by the test while the probe runs."""

    net_v2: bool = False
    satellite_status: int = 200
    drop_websockets: bool = False
    silent_close: bool = False
    """Echo websockets never answer a close frame (a peer gone quiet)."""
    seen_hosts: dict[str, set[str]] = field(default_factory=lambda: {"envproxy": set(),
                                                                      "satellite": set()})
    tokens: set[str] = field(default_factory=set)
    websockets: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)


def _app(stand: Stand, name: str) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        stand.seen_hosts[name].add(request.headers.get("Host", ""))
        stand.tokens.add(request.headers.get("Session-Token", ""))
        status = stand.satellite_status if name == "satellite" else 200
        return web.json_response({"path": request.path}, status=status)

    async def echo(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoclose=not stand.silent_close)
        await socket.prepare(request)
        stand.websockets.append(name)
        while not socket.closed:
            message = await socket.receive()
            if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                # No close frame back: wait until the client gives up on it and goes.
                for _ in range(300 if stand.silent_close else 0):
                    if request.transport is None or request.transport.is_closing():
                        break
                    await asyncio.sleep(0.05)
                break
            if stand.drop_websockets:
                stand.drop_websockets = False
                await socket.close()
                break
            if message.type == WSMsgType.TEXT:
                await socket.send_str(message.data)
        return socket

    app = web.Application()
    app.router.add_get("/ws/echo", echo)
    app.router.add_get("/probe", hello)
    return app


def _primary(stand: Stand) -> web.Application:
    async def pools(request: web.Request) -> web.Response:
        assert request.headers.get("Session-Token") == TOKEN
        return web.json_response({"kubernetes": [{
            "id": "p1", "name": "us-east", "status": "active",
            "envproxy_access_url": f"http://127.0.0.1:{stand.ports['envproxy']}",
            "devurl_host": "*.us-east.coder.lab.internal", "enable_net_v2": stand.net_v2,
        }]})

    app = web.Application()
    app.router.add_get("/api/private/resource-pools", pools)
    return app


@pytest.fixture
def stand() -> Iterator[Stand]:
    state = Stand()
    loop = asyncio.new_event_loop()
    runners: list[web.AppRunner] = []

    async def serve() -> None:
        for name, app in (("primary", _primary(state)), ("envproxy", _app(state, "envproxy")),
                          ("satellite", _app(state, "satellite"))):
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None
            state.ports[name] = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            runners.append(runner)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    try:
        yield state
    finally:
        async def stop() -> None:
            for runner in runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def _run(stand: Stand) -> ProbeRun:
    target = Target(
        region="us-east", label=APP_LABEL, provider="us-east",
        satellite=Route(SATELLITE, f"http://127.0.0.1:{stand.ports['satellite']}",
                        APP_LABEL + ".coder-us-east.lab.coder-migrate.test"),
    )
    return ProbeRun([target], f"http://127.0.0.1:{stand.ports['primary']}", TOKEN)


def test_users_follow_networking_v2_from_the_envproxy_to_the_satellite(stand: Stand) -> None:
    run = _run(stand)
    run.start()
    time.sleep(1.5)
    run.progress("us-east", "started", "switch provider us-east to Networking v2")
    stand.net_v2 = True
    time.sleep(2.5)
    run.finish_operation()
    time.sleep(0.5)
    report = run.stop()
    row = report.regions[0]
    assert report.failed == 0, report.lines()
    assert row.routes == (ENVPROXY, SATELLITE)
    assert 15 <= row.requests <= 30, row  # one every 0.2 s for 4.5 s
    assert row.longest_gap < 0.5
    assert stand.seen_hosts == {"envproxy": {APP_LABEL + ".us-east.coder.lab.internal"},
                                "satellite": {APP_LABEL + ".coder-us-east.lab.coder-migrate.test"}}
    assert stand.tokens == {TOKEN}
    # The websocket moved with the address, as a reloaded page's does: no drop.
    assert stand.websockets == ["envproxy", "satellite"]
    assert row.websocket_drops == 0
    assert all(TOKEN not in line for line in report.lines())
    assert report.lines()[-1].startswith("total: 0 failed;")


def test_failed_requests_and_a_quickly_reopened_websocket(stand: Stand) -> None:
    stand.net_v2 = True
    run = _run(stand)
    run.start()
    time.sleep(1.0)
    run.progress("us-east", "started", "install release coder-satellite")
    # A request sent before the step started and answered after the 502s began would be
    # (rightly) counted before the step: let those in flight finish first.
    time.sleep(0.5)
    stand.satellite_status = 502
    time.sleep(1.0)
    stand.satellite_status = 200
    stand.drop_websockets = True
    time.sleep(1.5)
    report = run.stop()
    row = report.regions[0]
    assert 3 <= row.failed_requests <= 7, report.lines()
    assert (row.websocket_drops, row.failed_websockets) == (1, 0), report.lines()
    # The 502s are one run of consecutive failures, named by the step running then; on a
    # loaded machine a late answer may add a group of its own, never another step.
    refused = [g for g in report.failures if g.reason == "HTTP 502"]
    assert len(refused) == 1, report.lines()
    assert {g.step for g in report.failures} == {"us-east: install release coder-satellite"}
    assert row.longest_gap >= 0.9


def test_the_report_of_a_primary_that_never_answers(stand: Stand) -> None:
    target = Target("us-east", APP_LABEL, "us-east",
                    Route(SATELLITE, "http://127.0.0.1:9", "x.example.test"))
    run = ProbeRun([target], "http://127.0.0.1:9", TOKEN)  # nothing listens on port 9
    run.start(ready_timeout=5)
    time.sleep(1.2)
    report = run.stop()
    detail: Any = report.regions[0]
    assert detail.failed_requests == detail.requests > 0
    assert detail.failed_websockets == 1
    assert {g.reason for g in report.failures} >= {"ClientConnectorError"}


def _entry(phase: str, at: float, detail: str) -> JournalEntry:
    stamp = dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return JournalEntry(run="r1", operation="migrate", change_id=detail, region="us-east",
                        phase=phase, at=stamp, by="ansible", detail=detail)  # type: ignore[arg-type]


def test_a_probe_beside_another_process_takes_the_steps_from_the_journal(stand: Stand) -> None:
    """`coder-migrate probe` beside the migrate playbook: no progress events reach it, so the
    steps and phases come from the journal's entries (whole seconds) of its window."""
    stand.net_v2 = True
    run = _run(stand)
    run.start()
    time.sleep(2.5)  # the step starts up to 2 s before the 502s: leave some "before"
    began = time.time()
    stand.satellite_status = 502
    time.sleep(1.0)
    stand.satellite_status = 200
    step = "install release coder-satellite"
    entries = [
        _entry("done", began - 3600, "an older run's change"),  # before the users: ignored
        _entry("started", math.floor(began) - 1, step),
        _entry("done", math.ceil(began + 1.0) + 1, step),
    ]
    time.sleep(max(0.0, math.ceil(began + 1.0) + 3.5 - time.time()))  # some "after"
    assert run.replay_journal(entries)
    report = run.stop(phased=True)
    row = report.regions[0]
    assert 3 <= row.failed_requests <= 7, report.lines()
    assert {g.step for g in report.failures} == {f"us-east: {step}"}, report.lines()
    assert all(row.latency[phase].count > 0 for phase in ("before", "during", "after")), row
    assert json.loads(json.dumps(report.to_json()))["lines"] == report.lines()


def test_a_journal_without_entries_in_the_window_leaves_the_report_unphased(stand: Stand) -> None:
    stand.net_v2 = True
    run = _run(stand)
    run.start()
    time.sleep(0.6)
    assert not run.replay_journal([_entry("done", time.time() - 600, "an older run's change")])
    report = run.stop(phased=False)
    assert list(report.regions[0].latency) == ["all"]
    assert report.failed == 0, report.lines()


def test_stopping_does_not_wait_for_a_peer_that_never_answers_the_close(stand: Stand) -> None:
    """The operation's exit waits for the users to leave: a websocket whose peer never sends
    its close frame (aiohttp waits 10 s for it) is cut after a second."""
    stand.silent_close = True
    run = _run(stand)
    run.start()
    time.sleep(1.0)
    run.finish_operation()
    stopping = time.monotonic()
    report = run.stop()
    assert time.monotonic() - stopping < 3.0
    assert report.failed == 0, report.lines()
