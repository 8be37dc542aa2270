"""The emulator's HTTP server: middleware (faults, errors), admin routes, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import socket
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from coder_migrate.errors import ConfigError, PortBusy
from coder_migrate.lab.coderd.app_auth import AppAuthRedirect
from coder_migrate.lab.coderd.config import EmulatorConfig, FaultRule, Mode
from coder_migrate.lab.coderd.core import ApiError, Emulator, error_response, token_hash
from coder_migrate.lab.coderd.release import mode_for_release
from coder_migrate.lab.coderd.store import Store
from coder_migrate.lab.coderd.v1_api import V1Api
from coder_migrate.lab.coderd.v1_envproxy import V1Envproxy
from coder_migrate.lab.coderd.v2_api import V2Api

__all__ = ["EmulatorServer", "parse_listen", "serve"]

log = logging.getLogger("coder_migrate.lab.coderd")
Handler = Any


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` on loopback only."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"--listen: expected HOST:PORT, found {listen!r}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"--listen: expected a loopback IP address, found {host!r}") from None
    if not address.is_loopback:
        raise ConfigError(f"--listen: the emulator listens on loopback only, found {host}")
    return host, int(port_text)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise PortBusy(f"cannot listen on {host}:{port} ({error.strerror})") from error
    return sock


class EmulatorServer:
    """One emulator process: state, routes, agents, health poller."""

    def __init__(
        self,
        *,
        mode: Mode,
        config: EmulatorConfig,
        state_dir: Path,
        token_file: Path,
        host: str,
        port: int,
    ) -> None:
        self.host, self.port = host, port
        self.token_file = token_file
        # Bind first: a busy port must fail before anything is written.
        self._socket = _bind(host, port)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(state_dir / "coderd.sqlite3")
        access_url = config.access_url or f"http://{host}:{port}"
        self.emu = Emulator(mode=mode, config=config, store=self.store, access_url=access_url)
        self.v1 = V1Api(self.emu)
        self.v2 = V2Api(self.emu)
        self.runner: web.AppRunner | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._restart_target: tuple[Mode, str] | None = None

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.on_response_prepare.append(self._version_header)
        self._admin_routes(app)
        if self.emu.is_v1:
            self.v1.routes(app)
            V1Envproxy(self.emu).routes(app)
        else:
            AppAuthRedirect(self.emu).routes(app)  # first: it is the route that answers
            self.v2.routes(app)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        for rule in self.emu.faults.for_request(request.method, request.path):
            if rule.kind == "latency":
                await asyncio.sleep(rule.seconds)
            elif rule.kind == "status":
                return error_response(
                    self.emu.mode, ApiError(rule.status, "injected fault: server error")
                )
            elif rule.kind == "drop" and request.transport is not None:
                # Closing before answering makes the client see a dropped connection.
                request.transport.close()
                return web.Response(status=500)
        try:
            response: web.StreamResponse = await handler(request)
        except ApiError as error:
            response = error_response(self.emu.mode, error)
        except web.HTTPNotFound:
            # coderd's httpapi.RouteNotFound for v2; v1's wording is not documented (ASSUMED).
            message = "route not found" if self.emu.is_v1 else "Route not found."
            response = error_response(self.emu.mode, ApiError(404, message))
        except web.HTTPMethodNotAllowed:
            response = error_response(self.emu.mode, ApiError(405, "method not allowed"))
        return response

    async def _version_header(self, _request: web.Request, response: web.StreamResponse) -> None:
        """Every answer, errors, redirects and websocket upgrades included, names the version:
        v1 in ``coder-version`` (the CLI reads it), v2 in ``X-Coder-Build-Version`` (coderd's
        middleware; the v2 CLI refuses a server without it)."""
        header = "coder-version" if self.emu.is_v1 else "X-Coder-Build-Version"
        response.headers[header] = self.emu.version

    # -- admin -------------------------------------------------------------------------------

    def _admin_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/emulator/state", self.admin_state)
        r.add_put("/emulator/config", self.admin_config)
        r.add_post("/emulator/health/check", self.admin_health_check)
        r.add_get("/emulator/faults", self.admin_faults)
        r.add_post("/emulator/faults", self.admin_add_fault)
        r.add_delete("/emulator/faults", self.admin_clear_faults)
        r.add_delete("/emulator/faults/{id}", self.admin_remove_fault)
        r.add_post("/emulator/users/{username}/tokens", self.admin_user_token)
        r.add_get("/emulator/agents", self.admin_agents)
        r.add_put("/emulator/release", self.admin_release)
        r.add_put("/emulator/provisioner-psk", self.admin_provisioner_psk)
        r.add_post("/emulator/providers/{name}/envproxy-token", self.admin_envproxy_token)

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "request body must be JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    async def admin_state(self, request: web.Request) -> web.Response:
        self.emu.require_admin(request)
        counts = {
            kind: len(self.store.all(kind))
            for kind in ("user", "org", "provider", "workspace", "satellite", "proxy")
        }
        return web.json_response(
            {
                "mode": self.emu.mode,
                "version": self.emu.version,
                "access_url": self.emu.access_url,
                "health_interval_seconds": self.emu.health_interval,
                "build_step_seconds": self.emu.build_step_seconds,
                "counts": counts,
            }
        )

    async def admin_config(self, request: web.Request) -> web.Response:
        self.emu.require_admin(request)
        body = await self._json(request)
        for key in ("health_interval_seconds", "build_step_seconds"):
            if key in body:
                value = body[key]
                if (
                    not isinstance(value, int | float)
                    or value < 0
                    or (key == "health_interval_seconds" and value <= 0)
                ):
                    raise ApiError(400, f"{key} must be a positive number")
        if "health_interval_seconds" in body:
            self.emu.health_interval = float(body["health_interval_seconds"])
            self.v2.health.trigger()
        if "build_step_seconds" in body:
            self.emu.build_step_seconds = float(body["build_step_seconds"])
        return await self.admin_state(request)

    async def admin_health_check(self, request: web.Request) -> web.Response:
        self.emu.require_admin(request)
        if self.emu.is_v1:
            raise ApiError(400, "the health poller runs in v2 modes only")
        proxies = await self.v2.health.check_all()
        return web.json_response({"proxies": [{"name": p["name"], **p["status"]} for p in proxies]})

    async def admin_faults(self, request: web.Request) -> web.Response:
        self.emu.require_admin(request)
        return web.json_response({"faults": [r.model_dump() for r in self.emu.faults.rules()]})

    async def admin_add_fault(self, request: web.Request) -> web.Response:
        self.emu.require_admin(request)
        try:
            rule = FaultRule.model_validate(await self._json(request))
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise ApiError(400, f"fault rule: {key}: {first['msg']}") from None
        rule = self.emu.faults.add(rule)
        return web.json_response({"id": rule.id, "fault": rule.model_dump()}, status=201)

    async def admin_clear_faults(self, request: web.Request) -> web.Response:
        self.emu.require_admin(request)
        self.emu.faults.clear()
        return web.json_response({"faults": []})

    async def admin_remove_fault(self, request: web.Request) -> web.Response:
        self.emu.require_admin(request)
        if not self.emu.faults.remove(request.match_info["id"]):
            raise ApiError(404, "fault rule not found")
        return web.json_response({})

    async def admin_user_token(self, request: web.Request) -> web.Response:
        self.emu.require_admin(request)
        user = self.store.find("user", username=request.match_info["username"])
        if user is None:
            raise ApiError(404, "user not found")
        return web.json_response({"session_token": self.emu.new_session(user["id"])}, status=201)

    async def admin_agents(self, request: web.Request) -> web.Response:
        self.emu.require_admin(request)
        return web.json_response({"agents": self.emu.all_agent_addresses()})

    async def admin_envproxy_token(self, request: web.Request) -> web.Response:
        """A new envproxy token for the workspace provider: what ``coder providers create``
        prints for ``helm ... --set envproxy.token=`` (V1 §4); an earlier one stops working."""
        self.emu.require_admin(request)
        provider = self.store.find("provider", name=request.match_info["name"])
        if provider is None:
            raise ApiError(404, "workspace provider not found")
        token = secrets.token_urlsafe(32)
        provider["envproxy_token_hash"] = token_hash(token)
        self.store.put("provider", provider)
        return web.json_response({"envproxy_token": token}, status=201)

    async def admin_release(self, request: web.Request) -> web.Response:
        """Play the primary release VERSION (the lab follows the primary's Deployment): a
        new version restarts the server the way a pod restart would; 202 while it does."""
        self.emu.require_admin(request)
        version = (await self._json(request)).get("version")
        if not isinstance(version, str) or not version:
            raise ApiError(400, "version must be a non-empty string")
        mode, version = mode_for_release(self.emu.mode, version)
        restarting = self._restarting is not None and not self._restarting.done()
        if not restarting and (mode, version) == (self.emu.mode, self.emu.version):
            return await self.admin_state(request)
        if restarting and (mode, version) != self._restart_target:
            raise ApiError(409, "a restart is already under way")
        if not restarting:
            # After this answer is sent: the restart ends every open connection, this one too.
            self._restart_target = (mode, version)
            self._restarting = asyncio.get_running_loop().create_task(
                self.restart(mode, version), name="coderd-restart"
            )
        return web.json_response({"mode": mode, "version": version, "restarting": True},
                                 status=202)

    async def admin_provisioner_psk(self, request: web.Request) -> web.Response:
        """The primary's ``CODER_PROVISIONER_DAEMON_PSK`` ("" for none), as the lab's pods
        supervisor reads it from the primary release's Secret; only its hash is kept."""
        self.emu.require_admin(request)
        psk = (await self._json(request)).get("psk")
        if not isinstance(psk, str):
            raise ApiError(400, "psk must be a string")
        changed = await self.emu.provisioners.set_psk(psk)
        return web.json_response({"changed": changed})

    # -- lifecycle ---------------------------------------------------------------------------

    def _write_token(self, token: str) -> None:
        self.token_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(token + "\n")
        self.token_file.chmod(0o600)

    async def start(self) -> None:
        token = self.emu.seed()
        self._write_token(token)
        await self.emu.start_agents()
        await self._serve()

    async def _serve(self) -> None:
        self.runner = web.AppRunner(
            self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self.runner.setup()
        # A duplicate of the listening socket: closing the site leaves the socket listening,
        # so a restart queues new connections instead of refusing them.
        await web.SockSite(self.runner, self._socket.dup()).start()
        if self.emu.is_v1:
            await self.v1.resume_builds()
        else:
            self.v2.health.start()

    async def _stop_serving(self) -> None:
        await self.v2.health.stop()
        await self.v1.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def restart(self, mode: Mode, version: str) -> None:
        """What a restart of the primary's pod does: open connections (websockets, watches)
        end, builds in progress start again, the state stays. Workspaces (the agents) are
        not the primary's pod: they keep running."""
        log.warning("restarting as Coder %s (%s)", version, mode)
        await asyncio.sleep(0.1)  # let the admin answer go out first
        await self._stop_serving()
        self.emu.mode, self.emu.release_version = mode, version
        self.v1 = V1Api(self.emu)
        self.v2 = V2Api(self.emu)
        await self._serve()

    async def stop(self) -> None:
        if self._restarting is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restarting
        await self._stop_serving()
        self._socket.close()
        await self.emu.agents.stop()
        self.store.close()


async def serve(server: EmulatorServer) -> None:
    """Run until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    print(f"coderd emulator listening on {server.emu.access_url}", flush=True)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await server.stop()
