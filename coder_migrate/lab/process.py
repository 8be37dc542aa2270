"""Processes the lab starts: spawn detached, remember by PID (and start time), stop by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel

from coder_migrate.errors import PortBusy

STOP_GRACE_SECONDS = 10.0


class ProcessRef(BaseModel):
    """A process the lab started. The start time guards against a recycled PID."""

    name: str
    pid: int
    start_ticks: int

    def alive(self) -> bool:
        return start_ticks(self.pid) == self.start_ticks


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are space separated.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited
        return None
    return int(fields[19])


def ref_for(name: str, pid: int) -> ProcessRef | None:
    ticks = start_ticks(pid)
    return None if ticks is None else ProcessRef(name=name, pid=pid, start_ticks=ticks)


def spawn(
    name: str,
    command: Sequence[str],
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[ProcessRef, subprocess.Popen[bytes]]:
    """Start COMMAND in its own session (it outlives this process), output to LOG_FILE."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    ref = ref_for(name, process.pid)
    if ref is None:
        ref = ProcessRef(name=name, pid=process.pid, start_ticks=-1)
    return ref, process


def stop(ref: ProcessRef, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM, wait, then SIGKILL; only if the PID is still the process we started."""
    if not ref.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(ref.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(ref.pid)
        if not ref.alive():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(ref.pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and ref.alive():
        _reap(ref.pid)
        time.sleep(0.05)


def _reap(pid: int) -> None:
    # Our own children stay zombies until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free_ports(ports: Mapping[str, int], host: str = "127.0.0.1") -> None:
    for what, port in ports.items():
        if not port_is_free(port, host):
            owner = port_owner(port)
            held = f" by {owner}" if owner else ""
            raise PortBusy(
                f"port {host}:{port} ({what}) is already in use{held}; stop it (a lab elsewhere: "
                "`coder-migrate lab down --state-dir DIR`) or move this lab with "
                "`coder-migrate lab up --port-offset N`, then retry"
            )


def port_owner(port: int) -> str | None:
    """``pid N (command)`` of the process listening on PORT, if /proc tells."""
    inodes = {inode for inode, bound in _listening_sockets() if bound == port}
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if str(fd.readlink())[8:-1] in inodes:
                        command = (entry / "comm").read_text().strip()
                        return f"pid {entry.name} ({command})"
    return None


def port_is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _listening_sockets() -> list[tuple[str, int]]:
    """(socket inode, port) of every listening TCP socket and bound UDP socket."""
    sockets: list[tuple[str, int]] = []
    for table, listen_state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == listen_state:
                    sockets.append((fields[9], int(fields[1].rsplit(":", 1)[1], 16)))
    return sockets


def listening_ports_of(pids: set[int]) -> set[int]:
    """TCP ports in LISTEN state and bound UDP ports owned by any of PIDS (via /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = str(fd.readlink())
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    return {port for inode, port in _listening_sockets() if inode in inodes}
