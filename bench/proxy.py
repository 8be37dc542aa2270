"""Benchmark of the bundled proxy against nginx, all on loopback, in one run.

Targets (each started here, stopped by PID at the end):
- ``direct``: the upstream itself (nginx, 1 worker, static 100 B and 64 KiB files);
- ``nginx``: nginx as reverse proxy, 1 worker, upstream keepalive 512, HTTP/1.1,
  ``proxy_buffers 8 16k`` (the fair settings of proxy-baselines.md);
- ``proxy``: ``python -m coder_migrate.proxy`` (1 worker, satellite mode, so every request
  takes the full path: parse, checks, route, pooled upstream, head rebuild, streaming).

HTTP: wrk (pinned to core 0; the proxies to core 1, the upstream to core 0) for 100 B and
64 KiB at 50 and 200 connections; requests/s, p50/p99 and the proxy's CPU per request from
/proc. Rounds interleave all targets so ratios come from the same minutes. Stream: bytes
through an upgraded connection (HTTP/1.1 Upgrade, then raw) to a splice sink, against nginx
``stream`` with ``proxy_buffer_size 1m``. Idle: RSS growth with N idle upgraded connections.

TCP tunnel: bytes through ``/api/v2/workspaceagents/{id}/tcp?port=22`` (the proxy ends the
websocket and relays the frames' payload to the agent's TCP port) of a workspace proxy
registered with a v2 Coder emulator, to the agent's TCP echo and back; against direct TCP to
the same echo in the same run (the echo and the client on core 0, the proxy on core 1), and
against nginx ``stream`` relaying plain TCP to the same echo from the proxy's core
(``proxy_buffer_size 1m``): what a relay with no framing and no masking reaches on this
layout, where the direct path is two processes on one core and every relay adds a hop to
the other.
The client is a load generator like wrk, cheap on both paths so its own cost is not counted
against the proxy: it sends one pre-built 1 MiB block over and over (for the tunnel, one
binary frame masked with a fresh random key each run; the proxy still unmasks and checks
every frame) and counts what comes back (for the tunnel, with a frame-header reader that
skips payloads). A first run on each path checks that the echo answered the bytes sent.
CPU seconds per GiB relayed are shown for the proxy, the client and the echo (the
emulator's process), so a slow client or echo shows as such; the relay column is the proxy
for the tunnel and the nginx worker for nginx stream.

    .venv/bin/python bench/proxy.py [--rounds 3] [--duration 5] [--stream-mib 1024]
                                    [--idle 10000] [--tunnel-mib 256] [--only tunnel]
                                    [--out FILE] [--address 127.0.0.1] [--ports FIRST-LAST]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import uvloop

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLIENT_CORE = "0"
PROXY_CORE = "1"

SINK_SOURCE = r"""
import asyncio, os, socket, sys
import uvloop
DEVNULL = os.open("/dev/null", os.O_WRONLY)
FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

class Sink(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""
    def data_received(self, data):
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        path = self.buffer.split(b" ", 2)[1]
        rest = self.buffer[end + 4:]
        self.transport.write(HEAD)
        expected = int(path.rsplit(b"/", 1)[1]) if path.startswith(b"/sink/") else -1
        if expected < 0:
            return  # idle connection: hold it
        self.transport.pause_reading()
        sock = self.transport.get_extra_info("socket")
        fd = os.dup(sock.fileno())
        self.transport.abort()
        start_splice(fd, expected - len(rest))

def start_splice(fd, remaining):
    loop = asyncio.get_running_loop()
    r, w = os.pipe2(os.O_NONBLOCK)
    state = {"left": remaining}
    def readable():
        try:
            n = os.splice(fd, w, 1 << 20, flags=FLAGS)
        except BlockingIOError:
            return
        if n == 0:
            finish()
            return
        moved = n
        while moved:
            moved -= os.splice(r, DEVNULL, moved, flags=os.SPLICE_F_MOVE)
        state["left"] -= n
        if state["left"] <= 0:
            os.write(fd, b"OK")
    def finish():
        loop.remove_reader(fd)
        os.close(fd); os.close(r); os.close(w)
    loop.add_reader(fd, readable)

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, sys.argv[2], int(sys.argv[1]), backlog=8192)
    print("ready", flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


HOST = "127.0.0.1"  # --address
_PORTS: list[int] = []  # --ports FIRST-LAST: taken in order; empty: the kernel's free ports


PORT_RANGE = ""


def free_port() -> int:
    while _PORTS:
        port = _PORTS.pop(0)
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    if PORT_RANGE:
        raise SystemExit(f"no free port left in --ports {PORT_RANGE}")
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def raise_nofile() -> None:
    # Up to the hard limit (only root with CAP_SYS_RESOURCE may go beyond it).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Started:
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, command: list[str], core: str, **kwargs: object) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(  # type: ignore[call-overload]
            ["taskset", "-c", core, *command],
            preexec_fn=raise_nofile,
            stdout=kwargs.pop("stdout", subprocess.DEVNULL),
            stderr=kwargs.pop("stderr", subprocess.DEVNULL),
            **kwargs,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {HOST}:{port}")


def nginx_worker_pid(master: int) -> int:
    for _ in range(50):
        children = Path(f"/proc/{master}/task/{master}/children")
        if children.exists():
            text = children.read_text().split()
            if text:
                return int(text[0])
        time.sleep(0.05)
    raise SystemExit("nginx worker did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def parse_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    assert match, text
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(port: int, path: str, connections: int, duration: int) -> tuple[float, float, float, int]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            CLIENT_CORE,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "5s",
            "--latency",
            f"http://{HOST}:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = parse_ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = parse_ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: .*?(\d+) timeout"):
        match = re.search(pattern, out)
        if match:
            errors += int(match.group(1))
    return rps, p50, p99, errors


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def busy_processes() -> list[str]:
    out = subprocess.run(
        ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [line.strip() for line in out[:5] if float(line.split()[0]) >= 5.0]


def write_nginx(directory: Path, name: str, body: str) -> Path:
    conf = directory / f"{name}.conf"
    conf.write_text(
        f"worker_processes 1;\npid {directory}/{name}.pid;\nerror_log {directory}/{name}.err;\n"
        "daemon off;\n"
        + (
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
            if "stream {" in body
            else ""
        )
        + "events { worker_connections 30000; }\n"
        + body
    )
    return conf


def stream_client(port: int, total: int, chunk_file: Path) -> float:
    """Send ``total`` bytes through an upgraded connection; MB/s (1e6 B)."""
    with socket.create_connection((HOST, port)) as sock:
        sock.sendall(
            f"GET /sink/{total} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head[:100]
        size = chunk_file.stat().st_size
        started = time.perf_counter()
        with chunk_file.open("rb") as source:
            sent = 0
            while sent < total:
                count = min(size, total - sent)
                offset = 0
                while offset < count:
                    offset += os.sendfile(sock.fileno(), source.fileno(), offset, count - offset)
                sent += count
        reply = sock.recv(16)
        elapsed = time.perf_counter() - started
        assert reply == b"OK", reply
    return total / elapsed / 1e6


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    semaphore = asyncio.Semaphore(200)

    async def one() -> None:
        async with semaphore:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(
                b"GET /idle HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n"
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert b" 101 " in head.split(b"\r\n", 1)[0]
            writers.append(writer)

    await asyncio.gather(*(one() for _ in range(count)))
    return writers


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Cell:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    errors: int = 0


def _admin(url: str, token: str, method: str, path: str, body: object = None) -> dict:  # type: ignore[type-arg]
    import httpx

    response = httpx.request(
        method,
        url + path,
        json=body,
        headers={"Coder-Session-Token": token, "Session-Token": token},
        timeout=30,
        trust_env=False,
    )
    response.raise_for_status()
    return dict(response.json())


class _Pump(asyncio.Protocol):
    """The load generator of the tunnel section: sends one pre-built block over and over,
    counts the payload that comes back, and costs the same per byte on both paths.

    Like wrk's pre-built requests, nothing is built per send: the direct path repeats the
    raw chunk, the tunnel path one masked binary frame of it (see :func:`_masked_frame`),
    and replies are counted, not assembled. The proxy still unmasks and checks every frame.
    """

    def __init__(self, block: bytes, blocks: int, total: int, accept: bytes) -> None:
        self.block, self.blocks, self.total = block, blocks, total
        self.accept = accept  # the tunnel's expected Sec-WebSocket-Accept; b"": direct TCP
        self.frames = bool(accept)
        self.started = 0.0
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.paused = False
        self.received = 0
        self.head = b""  # the handshake answer, until it is complete
        self.handshake = self.frames
        self.header = b""  # an incomplete frame header
        self.left = 0  # payload bytes left in the current frame
        self.kept: list[bytes] | None = None  # the payload, when checking it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def send(self) -> None:
        assert self.transport is not None
        if not self.started:
            self.started = time.perf_counter()
        while self.blocks and not self.paused:
            self.blocks -= 1
            self.transport.write(self.block)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.send()

    def data_received(self, data: bytes) -> None:
        if self.handshake:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.handshake = False
            head, data = self.head[: end + 4], self.head[end + 4 :]
            self._check_head(head)
        if self.frames:
            self._count_frames(data)
        else:
            self.received += len(data)
            if self.kept is not None:
                self.kept.append(data)
        if self.received >= self.total and not self.done.done():
            self.done.set_result(None)

    def _check_head(self, head: bytes) -> None:
        if not head.startswith(b"HTTP/1.1 101 ") or self.accept not in head:
            self._fail(f"no websocket handshake: {head[:200]!r}")
            return
        self.send()

    def _count_frames(self, data: bytes) -> None:
        position, size = 0, len(data)
        while position < size:
            if self.left:
                step = min(self.left, size - position)
                if self.kept is not None:
                    self.kept.append(data[position : position + step])
                self.left -= step
                self.received += step
                position += step
                continue
            header = self.header + data[position : position + 10 - len(self.header)]
            length = header[1] & 0x7F if len(header) >= 2 else 0
            needed = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            if len(header) < max(2, needed):
                self.header = header
                return
            if header[0] != 0x82:  # the tunnel answers in whole binary frames
                self._fail(f"unexpected frame {header[:2].hex()}")
                return
            position += needed - len(self.header)
            self.header = b""
            self.left = int.from_bytes(header[2:needed]) if needed > 2 else length

    def _fail(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(AssertionError(reason))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"closed after {self.received} of {self.total} bytes")


def _masked_frame(payload: bytes) -> bytes:
    """One binary client frame, masked with a fresh random key (RFC 6455 §5.3)."""
    from websockets.frames import Frame, Opcode

    return Frame(Opcode.BINARY, payload).serialize(mask=True, extensions=[])


async def _echo(
    address: str, total: int, chunk: bytes, *, path: str = "", check: bool = False
) -> float:
    """Send TOTAL bytes to the TCP echo, directly or (PATH) through the tunnel, and read
    them back; MB/s (1e6 B) of payload. CHECK: compare what came back with what was sent."""
    import base64

    from websockets.utils import accept_key

    loop = asyncio.get_running_loop()
    host, port = address.rsplit(":", 1)
    blocks, rest = divmod(total, len(chunk))
    assert not rest, "TOTAL is a multiple of the chunk"
    key = base64.b64encode(os.urandom(16))
    accept = accept_key(key.decode()).encode() if path else b""
    pump = _Pump(_masked_frame(chunk) if path else chunk, blocks, total, accept)
    if check:
        pump.kept = []
    transport, _ = await loop.create_connection(lambda: pump, host, int(port))
    transport.set_write_buffer_limits(high=1 << 20)
    if path:
        transport.write(
            f"GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n".encode()
            + b"Sec-WebSocket-Key: " + key + b"\r\n\r\n"
        )  # fmt: skip
    else:
        pump.send()
    try:
        await pump.done
    finally:
        transport.abort()
    elapsed = time.perf_counter() - pump.started
    if pump.kept is not None:
        assert b"".join(pump.kept) == chunk * blocks, "the echo answered other bytes"
    return total / elapsed / 1e6


def run_tunnel(args: argparse.Namespace, started: Started, work: Path) -> list[str]:
    """TCP over websocket through a registered workspace proxy vs direct TCP to the echo."""
    import httpx

    from coder_migrate.lab.coderd import serve_command
    from coder_migrate.proxy.router import SIGNED_TOKEN_QUERY

    coderd_port, proxy_port = free_port(), free_port()
    coderd_url = f"http://{HOST}:{coderd_port}"
    token_file = work / "coderd-token"
    emulator = started.start(
        serve_command(
            listen=f"{HOST}:{coderd_port}",
            state_dir=work / "coderd",
            mode="v2",
            token_file=token_file,
        ),
        CLIENT_CORE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    wait_port(coderd_port, 30.0)
    deadline = time.monotonic() + 30
    while not token_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    admin = token_file.read_text().strip()
    proxy_token = _admin(
        coderd_url, admin, "POST", "/api/v2/workspaceproxies", {"name": "bench-tunnel"}
    )["proxy_token"]
    proxy = started.start(
        [PYTHON, "-m", "coder_migrate.proxy"],
        PROXY_CORE,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CODER_")},
            "PYTHONPATH": str(ROOT),
            "CODER_PRIMARY_ACCESS_URL": coderd_url,
            "CODER_PROXY_SESSION_TOKEN": proxy_token,
            "CODER_ACCESS_URL": f"http://{HOST}:{proxy_port}",
            "CODER_HTTP_ADDRESS": f"{HOST}:{proxy_port}",
            "CODER_PROXY_ENV_FILE": str(work / "empty.env"),
        },
    )
    (work / "empty.env").write_text("")
    wait_port(proxy_port, 30.0)
    agent = next(
        a
        for a in _admin(coderd_url, admin, "GET", "/emulator/agents")["agents"]
        if a["port_protocols"].get("22") == "tcp"
    )
    session = _admin(coderd_url, admin, "POST", f"/emulator/users/{agent['owner']}/tokens")[
        "session_token"
    ]
    base = f"ws://{HOST}:{proxy_port}/api/v2/workspaceagents/{agent['agent_id']}/tcp?port=22"
    signed = httpx.post(
        f"{coderd_url}/api/v2/applications/reconnecting-pty-signed-token",
        headers={"Coder-Session-Token": session},
        json={"url": base, "agentID": agent["agent_id"]},
        timeout=30,
        trust_env=False,
    )
    signed.raise_for_status()
    tunnel_path = (
        f"/api/v2/workspaceagents/{agent['agent_id']}/tcp?port=22"
        f"&{SIGNED_TOKEN_QUERY}={signed.json()['signed_token']}"
    )
    proxy_address = f"{HOST}:{proxy_port}"
    direct_address = agent["ports"]["22"]
    # The best a relay can do on this layout: nginx stream (C, no framing, no masking) on
    # the proxy's core between the same client and echo.
    relay_port = free_port()
    relay = started.start(
        nginx_conf(work, "tunnel-relay", stream_relay_body(relay_port, direct_address)),
        PROXY_CORE,
    )
    wait_port(relay_port)
    relay_address = f"{HOST}:{relay_port}"

    total = args.tunnel_mib << 20
    chunk = os.urandom(1 << 20)
    results: dict[str, list[float]] = {"direct TCP": [], "nginx stream relay": [], "tunnel": []}
    # CPU seconds per GiB relayed (both directions), per path and process.
    cpu: dict[tuple[str, str], list[float]] = {}
    processes = {"proxy": proxy.pid, "relay": nginx_worker_pid(relay.pid), "echo": emulator.pid}
    # Warm-up (the proxy's token cache, the agent's connection path) and a check that
    # every path echoes the bytes sent.
    for address, path in ((direct_address, ""), (relay_address, ""), (proxy_address, tunnel_path)):
        uvloop.run(_echo(address, 4 << 20, chunk, path=path, check=True))
    for _round in range(args.rounds):
        for name, run_one in (
            ("direct TCP", lambda: _echo(direct_address, total, chunk)),
            ("nginx stream relay", lambda: _echo(relay_address, total, chunk)),
            ("tunnel", lambda: _echo(proxy_address, total, chunk, path=tunnel_path)),
        ):
            before = {who: cpu_seconds(pid) for who, pid in processes.items()}
            before["client"] = own_cpu_seconds()
            results[name].append(uvloop.run(run_one()))
            after = {who: cpu_seconds(pid) for who, pid in processes.items()}
            after["client"] = own_cpu_seconds()
            for who in after:
                cpu.setdefault((name, who), []).append(
                    (after[who] - before[who]) / (2 * total / (1 << 30))
                )
    lines = [
        f"TCP over websocket ({args.tunnel_mib} MiB per run each way, {args.rounds} rounds, "
        "to the agent's TCP echo and back; MB/s = 1e6 B/s of payload; CPU s per GiB "
        "relayed, both directions counted):",
        "",
        "| path | MB/s median (min) | x direct TCP | x nginx stream relay "
        "| relay CPU s/GiB | client CPU s/GiB | echo CPU s/GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    base_rate, relay_rate = median(results["direct TCP"]), median(results["nginx stream relay"])
    for name, values in results.items():
        in_middle = {"tunnel": "proxy", "nginx stream relay": "relay"}.get(name)
        relay_text = f"{median(cpu[name, in_middle]):.2f}" if in_middle else "-"
        lines.append(
            f"| {name} | {median(values):,.0f} ({min(values):,.0f}) | "
            f"{median(values) / base_rate:.2f} | {median(values) / relay_rate:.2f} | "
            f"{relay_text} | "
            f"{median(cpu[name, 'client']):.2f} | {median(cpu[name, 'echo']):.2f} |"
        )
    return lines


def nginx_conf(work: Path, name: str, body: str) -> list[str]:
    return ["nginx", "-c", str(write_nginx(work, name, body))]


def stream_relay_body(port: int, target: str) -> str:
    """nginx ``stream`` relaying plain TCP to TARGET, with the fair 1 MiB buffer."""
    return (
        f"stream {{ server {{ listen {HOST}:{port} backlog=8192; proxy_pass {target}; "
        "proxy_buffer_size 1m; } }\n"
    )


def upstream_body(work: Path, port: int) -> str:
    return (
        "http { access_log off; tcp_nodelay on; keepalive_requests 1000000;\n"
        f"  server {{ listen {HOST}:{port} backlog=8192; root {work}; location / {{ }} }} }}\n"
    )


def nginx_proxy_body(up_port: int, port: int) -> str:
    return (
        "http { access_log off; tcp_nodelay on;\n"
        f"  upstream backend {{ server {HOST}:{up_port}; keepalive 512; }}\n"
        f"  server {{ listen {HOST}:{port} backlog=8192; location / {{\n"
        "    proxy_pass http://backend; proxy_http_version 1.1;\n"
        '    proxy_set_header Connection "";\n'
        "    proxy_buffers 8 16k; proxy_buffer_size 16k;\n"
        "  } } }\n"
    )


def export_baseline(ref: str, work: Path) -> Path:
    """The proxy as it is at git ref ``ref``, to run beside this tree's in the same rounds."""
    target = work / "baseline"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "coder_migrate"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


@dataclass
class Targets:
    """Every process of the HTTP and stream sections, and where each listens."""

    ports: dict[str, int] = field(default_factory=dict)
    cpu_pid: dict[str, int] = field(default_factory=dict)
    stream_ports: dict[str, int] = field(default_factory=dict)
    stream_pid: dict[str, int] = field(default_factory=dict)


def start_proxy(
    started: Started,
    work: Path,
    name: str,
    primary: int,
    port: int,
    args: argparse.Namespace,
    pythonpath: Path = ROOT,
) -> subprocess.Popen[bytes]:
    cap = args.idle + 1000
    return started.start(
        [
            PYTHON, "-m", "coder_migrate.proxy", "--mode", "satellite",
            "--satellite-private-key-file", str(work / f"{name}.key"),
            "--max-connections-per-client", str(args.idle + 1000),
            "--primary-access-url", f"http://{HOST}:{primary}",
            "--http-address", f"{HOST}:{port}",
        ],
        PROXY_CORE,
        env=dict(os.environ, PYTHONPATH=str(pythonpath), CODER_PROXY_MAX_CONNECTIONS=str(cap)),
        cwd=pythonpath,  # "-m" puts the working directory first on sys.path, before PYTHONPATH
    )  # fmt: skip


def start_targets(args: argparse.Namespace, started: Started, work: Path) -> Targets:
    up_port, ngx_port, stream_port, sink_port, proxy_port, proxy_stream_port = (
        free_port() for _ in range(6)
    )
    up = started.start(nginx_conf(work, "upstream", upstream_body(work, up_port)), CLIENT_CORE)
    nginx = started.start(
        nginx_conf(work, "proxy", nginx_proxy_body(up_port, ngx_port)), PROXY_CORE
    )
    nginx_stream = started.start(
        nginx_conf(work, "stream", stream_relay_body(stream_port, f"{HOST}:{sink_port}")),
        PROXY_CORE,
    )
    (work / "sink.py").write_text(SINK_SOURCE)
    started.start([PYTHON, str(work / "sink.py"), str(sink_port), HOST], CLIENT_CORE)
    proxy = start_proxy(started, work, "proxy", up_port, proxy_port, args)
    proxy_stream = start_proxy(started, work, "stream", sink_port, proxy_stream_port, args)
    targets = Targets(
        ports={"direct": up_port, "nginx": ngx_port, "proxy": proxy_port},
        stream_ports={
            "direct": sink_port, "nginx stream": stream_port, "proxy": proxy_stream_port
        },
    )  # fmt: skip
    pids = {"direct": up, "nginx": nginx, "proxy": proxy}
    if args.baseline_ref:
        baseline = export_baseline(args.baseline_ref, work)
        name = f"proxy@{args.baseline_ref}"
        targets.ports[name] = free_port()
        pids[name] = start_proxy(
            started, work, "baseline", up_port, targets.ports[name], args, baseline
        )
    for port in (*targets.ports.values(), *targets.stream_ports.values()):
        wait_port(port)
    targets.cpu_pid = {
        name: nginx_worker_pid(p.pid) if name in ("direct", "nginx") else p.pid
        for name, p in pids.items()
    }
    targets.stream_pid = {
        "nginx stream": nginx_worker_pid(nginx_stream.pid),
        "proxy": proxy_stream.pid,
    }
    return targets


def http_rounds(args: argparse.Namespace, targets: Targets) -> dict[tuple[str, str, int], Cell]:
    cases = [(p, c) for p in ("/small", "/big") for c in (50, 200)]
    cells: dict[tuple[str, str, int], Cell] = {}
    for port in targets.ports.values():  # warm-up: pools, caches
        wrk(port, "/small", 50, 1)
    for _round in range(args.rounds):
        for path, conns in cases:
            for target, port in targets.ports.items():
                cpu_before = cpu_seconds(targets.cpu_pid[target])
                rps, p50, p99, errors = wrk(port, path, conns, args.duration)
                cpu = cpu_seconds(targets.cpu_pid[target]) - cpu_before
                cell = cells.setdefault((target, path, conns), Cell())
                cell.rps.append(rps)
                cell.p50.append(p50)
                cell.p99.append(p99)
                cell.cpu_us.append(cpu / max(1.0, rps * args.duration) * 1e6)
                cell.errors += errors
    return cells


def http_table(cells: dict[tuple[str, str, int], Cell], targets: Targets) -> list[str]:
    lines = [
        "| target | case | req/s | x nginx | p50 ms | p99 ms | p99 x nginx | CPU us/req "
        "| CPU x nginx | err |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in ("/small", "/big"):
        for conns in (50, 200):
            base = cells[("nginx", path, conns)]
            for target in targets.ports:
                cell = cells[(target, path, conns)]
                size = "100 B" if path == "/small" else "64 KiB"
                lines.append(
                    f"| {target} | {size} c{conns} | {median(cell.rps):,.0f} | "
                    f"{median(cell.rps) / median(base.rps):.2f} | {median(cell.p50):.2f} | "
                    f"{median(cell.p99):.2f} | {median(cell.p99) / median(base.p99):.2f} | "
                    f"{median(cell.cpu_us):.1f} | "
                    f"{median(cell.cpu_us) / median(base.cpu_us):.2f} | {cell.errors} |"
                )
    return lines


def stream_section(args: argparse.Namespace, targets: Targets) -> list[str]:
    chunk = Path("/dev/shm") / f"bench-proxy-{os.getpid()}"
    chunk.write_bytes(os.urandom(1 << 20) * 64)
    stream: dict[str, list[float]] = {name: [] for name in targets.stream_ports}
    stream_cpu: dict[str, list[float]] = {name: [] for name in targets.stream_pid}
    total = args.stream_mib << 20
    try:
        for _round in range(args.rounds):
            for name, port in targets.stream_ports.items():
                pid = targets.stream_pid.get(name)
                before = cpu_seconds(pid) if pid else 0.0
                stream[name].append(stream_client(port, total, chunk))
                if pid:
                    stream_cpu[name].append((cpu_seconds(pid) - before) / (total / (1 << 30)))
    finally:
        chunk.unlink()
    lines = [
        f"Stream relay ({args.stream_mib} MiB per run through an upgraded connection, "
        "MB/s = 1e6 B/s):",
        "",
        "| relay | MB/s median (min) | x nginx stream | CPU s/GiB |",
        "|---|---|---|---|",
    ]
    for name, values in stream.items():
        cpu_text = f"{median(stream_cpu[name]):.2f}" if name in stream_cpu else "-"
        lines.append(
            f"| {name} | {median(values):,.0f} ({min(values):,.0f}) | "
            f"{median(values) / median(stream['nginx stream']):.2f} | {cpu_text} |"
        )
    return lines


def idle_section(args: argparse.Namespace, targets: Targets) -> list[str]:
    rows: list[tuple[str, int, float]] = []
    for name in ("proxy", "nginx stream"):
        pid = targets.stream_pid[name]
        asyncio.run(
            _hold_idle(targets.stream_ports[name], args.idle, pid, rss_kib(pid), rows, name)
        )
    lines = [
        "| idle upgraded connections | count | RSS growth KiB | per connection |",
        "|---|---|---|---|",
    ]
    for name, count, per in rows:
        lines.append(f"| {name} | {count:,} | {per * count:,.0f} | {per:.1f} KiB |")
    return lines


def run(args: argparse.Namespace) -> str:
    raise_nofile()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    work = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    work.chmod(0o755)  # nginx workers run as an unprivileged user
    (work / "small").write_bytes(b"s" * 100)
    (work / "big").write_bytes(b"b" * 65536)
    started = Started()
    lines: list[str] = []
    try:
        load_before, busy_before = load_average(), busy_processes()
        if args.only != "tunnel":
            targets = start_targets(args, started, work)
            cells = http_rounds(args, targets)
            lines += http_table(cells, targets)
            if args.only != "http":
                lines += ["", *stream_section(args, targets), "", *idle_section(args, targets)]
        if args.only in (None, "tunnel"):
            lines += ["", *run_tunnel(args, started, work)]
        header = [
            f"Machine: {os.cpu_count()} cores; load average before {load_before}, after "
            f"{load_average()}; busy before: {', '.join(busy_before) or 'none'}; after: "
            f"{', '.join(busy_processes()) or 'none'}.",
            f"Rounds: {args.rounds} x {args.duration}s per cell (medians); wrk on core "
            f"{CLIENT_CORE}, proxies on core {PROXY_CORE}, upstream on core {CLIENT_CORE}.",
            "",
        ]
        lines = header + lines
    finally:
        started.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return "\n".join(lines)


async def _hold_idle(
    port: int, count: int, pid: int, before: int, rows: list[tuple[str, int, float]], name: str
) -> None:
    writers = await open_idle(port, count)
    await asyncio.sleep(1.0)
    after = rss_kib(pid)
    rows.append((name, len(writers), (after - before) / max(1, len(writers))))
    for writer in writers:
        writer.close()
    await asyncio.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--stream-mib", type=int, default=1024)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--tunnel-mib", type=int, default=256)
    parser.add_argument("--only", choices=("tunnel", "http"), help="Run one section only.")
    parser.add_argument(
        "--baseline-ref",
        help="Also run the proxy as it is at this git ref (e.g. main) in the same rounds.",
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--address", default="127.0.0.1", help="Loopback address to listen on.")
    parser.add_argument("--ports", default="", help="FIRST-LAST: listen on ports of this range.")
    args = parser.parse_args()
    global HOST, PORT_RANGE
    HOST = args.address
    if args.ports:
        first, _, last = args.ports.partition("-")
        if not (first.isdigit() and last.isdigit() and 1024 <= int(first) <= int(last) < 65536):
            parser.error("--ports FIRST-LAST, 1024 <= FIRST <= LAST < 65536")
        PORT_RANGE = args.ports
        _PORTS.extend(range(int(first), int(last) + 1))
    if args.duration > 30 or args.rounds > 10 or args.idle > 20000 or args.tunnel_mib > 4096:
        parser.error(
            "bounded: --duration <= 30, --rounds <= 10, --idle <= 20000, --tunnel-mib <= 4096"
        )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and 2 * args.idle + 200 > hard:
        # The proxy holds two descriptors per relayed connection.
        args.idle = (hard - 200) // 2
        print(f"note: open-files hard limit {hard}; idle connections capped at {args.idle}")
    report = run(args)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
