"""Workspace builds of the v1 emulator: rebuilds, their events, and the ``watch-update`` stream
(reference: coder-v1-api.md §5; docs/coder-emulator.md "Rebuilds").

The build log is kept (in the store) as real Coder keeps it: a client that connects to
``watch-update`` gets the current build's events so far, or the last build's whole log when no
build runs (the real CLI's ``watch-build`` on a workspace never rebuilt since it was created
prints its creation build). Every stream ends with ``done``: the real clients
(``coder-sdk`` ``WaitForWorkspaceReady``, the CLI's ``trailBuildLogs``) stop only there, so a
failing build sends ``error`` and then ``done``, and the socket is closed after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from coder_migrate.lab.coderd.core import Emulator, now_iso
from coder_migrate.lab.coderd.store import Doc

__all__ = ["Build", "V1Builds"]

# What a build says, stage by stage (ASSUMED wording; the types are coder-sdk's).
_STAGES = (("stage", "Pulling image"), ("substage", "Image pulled"),
           ("stage", "Starting container"))


@dataclass
class Build:
    workspace_id: str
    build_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1]["type"] == "done"


def _event(workspace_id: str, build_id: str, kind: str, msg: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "workspace_id": workspace_id, "build_id": build_id,
            "time": now_iso(), "type": kind, "msg": msg}


class V1Builds:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.live: dict[str, Build] = {}

    def keep_creation_logs(self) -> None:
        """A seeded workspace was built once, when it was created: keep that build's log."""
        for workspace in self.emu.store.all("workspace"):
            if self.emu.store.get("build", workspace["id"]) is None:
                build_id = str(uuid.uuid4())
                events = [_event(workspace["id"], build_id, "start", "Creating workspace")]
                events += [_event(workspace["id"], build_id, k, m) for k, m in _STAGES]
                events.append(_event(workspace["id"], build_id, "done", "Workspace is ready"))
                self.emu.store.put("build", {"id": workspace["id"], "build_id": build_id,
                                             "events": events})

    async def resume(self) -> None:
        """Builds cut short by a restart start again."""
        for workspace in self.emu.store.all("workspace"):
            if workspace.get("updating"):
                self.start(workspace)

    async def stop(self) -> None:
        for build in self.live.values():
            if build.task is not None:
                build.task.cancel()

    def start(self, workspace: Doc) -> Doc:
        previous = self.live.get(workspace["id"])
        if previous is not None and previous.task is not None:
            previous.task.cancel()
        fault = self.emu.faults.for_build(workspace["id"], workspace["name"])
        build = Build(workspace_id=workspace["id"], build_id=str(uuid.uuid4()))
        self.live[workspace["id"]] = build
        workspace.update(updating=True, container_status="CREATING", updated_at=now_iso())
        self.emu.store.put("workspace", workspace)
        self._save(build)
        build.task = asyncio.get_running_loop().create_task(
            self._run(build, fault), name=f"build-{workspace['name']}"
        )
        return workspace

    def _save(self, build: Build) -> None:
        self.emu.store.put("build", {"id": build.workspace_id, "build_id": build.build_id,
                                     "events": build.events})

    async def _emit(self, build: Build, kind: str, msg: str) -> None:
        async with build.changed:
            build.events.append(_event(build.workspace_id, build.build_id, kind, msg))
            self._save(build)
            build.changed.notify_all()

    async def _run(self, build: Build, fault: str | None) -> None:
        step = self.emu.build_step_seconds
        await self._emit(build, "start", "Rebuilding workspace")
        if fault == "stuck_build":
            return
        for kind, message in _STAGES:
            await asyncio.sleep(step)
            await self._emit(build, kind, message)
        await asyncio.sleep(step)
        workspace = self.emu.store.get("workspace", build.workspace_id)
        if workspace is None:
            return
        failed = fault == "fail_build"
        workspace.update(updating=False, container_status="FAILED" if failed else "ON",
                         updated_at=now_iso())
        if not failed:
            workspace["last_built_at"] = now_iso()
        self.emu.store.put("workspace", workspace)
        if failed:
            await self._emit(build, "error", "container exited with code 1 (injected)")
        message = "Workspace build failed" if failed else "Workspace is ready"
        await self._emit(build, "done", message)

    def _stored(self, workspace_id: str) -> Build | None:
        doc = self.emu.store.get("build", workspace_id)
        if doc is None:
            return None
        return Build(workspace_id=workspace_id, build_id=doc["build_id"], events=doc["events"])

    async def watch(self, request: web.Request, workspace: Doc) -> web.StreamResponse:
        """``watch-update``: the current (or last) build's events, then the new ones, to done."""
        socket = web.WebSocketResponse(heartbeat=30)
        await socket.prepare(request)
        build = self.live.get(workspace["id"]) or self._stored(workspace["id"])
        sent = 0
        with contextlib.suppress(ConnectionError):
            while not socket.closed:
                current = self.live.get(workspace["id"])
                if current is not None and current is not build:
                    build, sent = current, 0  # a rebuild started: follow it from its start
                if build is None:
                    await asyncio.sleep(0.05)  # nothing built yet: wait for a build
                    continue
                pending = await self._pending(build, sent)
                for event in pending:
                    await socket.send_str(json.dumps(event))
                    sent += 1
                if build.finished and sent >= len(build.events):
                    break
        if not socket.closed:
            await socket.close()
        return socket

    @staticmethod
    async def _pending(build: Build, sent: int) -> list[dict[str, Any]]:
        async with build.changed:
            if sent >= len(build.events) and not build.finished:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(build.changed.wait(), timeout=0.5)
            return list(build.events[sent:])
