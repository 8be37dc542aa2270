"""Real loopback servers behind each emulated workspace agent.

Every app and every ``http`` port gets an HTTP echo listener (large and chunked bodies,
``/bytes/{n}``, ``/ws/echo``, the terminal-like ``/pty``); every ``tcp`` port an echo
socket. The primary tells authorised proxies these addresses (the agent-address contract in
docs/coder-emulator.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import WSMsgType, web

__all__ = ["AgentBackend", "AgentBackends", "echo_app"]

log = logging.getLogger("coder_migrate.lab.coderd.agents")
_PATTERN = b"0123456789abcdef"
_MAX_BYTES = 1 << 30


def echo_app(agent_id: str, agent_name: str) -> web.Application:
    """The HTTP app every agent listener serves."""
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/bytes/{count}", _send_bytes)
    app.router.add_get("/ws/echo", _ws_echo)
    app.router.add_get("/pty", partial(_pty, agent_name))
    app.router.add_route("*", "/{tail:.*}", partial(_echo, agent_id))
    return app


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def _send_bytes(request: web.Request) -> web.StreamResponse:
    try:
        total = int(request.match_info["count"])
        chunk = int(request.query.get("chunk", "65536"))
    except ValueError:
        raise web.HTTPBadRequest(text="count and chunk must be integers") from None
    if not 0 <= total <= _MAX_BYTES or not 1 <= chunk <= 1 << 22:
        raise web.HTTPBadRequest(text="count or chunk out of range")
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    block = _PATTERN * (chunk // len(_PATTERN) + 1)
    sent = 0
    while sent < total:
        size = min(chunk, total - sent)
        # Keep the pattern aligned across chunks so the receiver can check every byte.
        offset = sent % len(_PATTERN)
        await response.write(block[offset : offset + size])
        sent += size
    await response.write_eof()
    return response


async def _ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


async def _pty(agent_name: str, request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_bytes(f"coder-emulator pty {agent_name}\r\n$ ".encode())
    line = ""
    async for message in ws:
        if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            continue
        try:
            frame = json.loads(message.data)
        except ValueError:
            continue
        data = str(frame.get("data", "")) if isinstance(frame, dict) else ""
        if not data:
            continue
        output = ""
        for char in data:
            if char == "\r":
                if line.strip() == "exit":
                    await ws.send_bytes((output + "\r\n").encode())
                    await ws.close()
                    return ws
                output += "\r\n$ "
                line = ""
            else:
                output += char
                line += char
        await ws.send_bytes(output.encode())
    return ws


async def _echo(agent_id: str, request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        digest.update(chunk)
        size += len(chunk)
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": dict(request.headers),
            "body_bytes": size,
            "body_sha256": digest.hexdigest(),
            "agent_id": agent_id,
            "listener": f"{sockname[0]}:{sockname[1]}" if sockname else "",
        }
    )


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@dataclass
class AgentBackend:
    """The listeners of one agent and the addresses the contract reports."""

    agent_id: str
    apps: dict[str, str] = field(default_factory=dict)
    ports: dict[str, str] = field(default_factory=dict)
    port_protocols: dict[str, str] = field(default_factory=dict)  # port -> "http" | "tcp"
    pty_url: str = ""
    runner: web.AppRunner | None = None
    tcp_servers: list[asyncio.Server] = field(default_factory=list)


class AgentBackends:
    """Starts and stops the backends of every agent the emulator knows."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.backends: dict[str, AgentBackend] = {}

    async def start_agent(self, agent: dict[str, Any]) -> AgentBackend:
        agent_id = str(agent["id"])
        if agent_id in self.backends:
            return self.backends[agent_id]
        backend = AgentBackend(agent_id=agent_id)
        runner = web.AppRunner(
            echo_app(agent_id, str(agent["name"])), access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        backend.runner = runner

        async def http_listener() -> str:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, 0))
            await web.SockSite(runner, sock).start()
            return f"{self.host}:{sock.getsockname()[1]}"

        for app in agent.get("apps", []):
            backend.apps[str(app["slug"])] = f"http://{await http_listener()}"
        for port in agent.get("ports", []):
            protocol = str(port.get("protocol", "http"))
            backend.port_protocols[str(port["port"])] = protocol
            if protocol == "tcp":
                server = await asyncio.start_server(_tcp_echo, self.host, 0)
                backend.tcp_servers.append(server)
                backend.ports[str(port["port"])] = (
                    f"{self.host}:{server.sockets[0].getsockname()[1]}"
                )
            else:
                backend.ports[str(port["port"])] = await http_listener()
        pty_address = (
            next(
                (a for a in backend.ports.values() if a not in _tcp_addresses(backend)),
                None,
            )
            or await http_listener()
        )
        backend.pty_url = f"ws://{pty_address}/pty"
        self.backends[agent_id] = backend
        return backend

    async def stop(self) -> None:
        for backend in self.backends.values():
            for server in backend.tcp_servers:
                server.close()
            if backend.runner is not None:
                await backend.runner.cleanup()
        self.backends.clear()


def _tcp_addresses(backend: AgentBackend) -> set[str]:
    return {
        f"{s.sockets[0].getsockname()[0]}:{s.sockets[0].getsockname()[1]}"
        for s in backend.tcp_servers
    }
