"""How the lab's pod supervisor (:mod:`coder_migrate.lab.pods`) runs a pod's process: forked
by the fork server (``coder_migrate/lab/forkserver.py``, the proxy imported once) and
reparented to the supervisor as its child subreaper, or, when that cannot be, a new
interpreter (``subprocess.Popen``); both are waited for, signalled and killed the same way."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from coder_migrate.lab.paths import StateLayout
from coder_migrate.lab.pod_spec import PodPlan, host_environment
from coder_migrate.lab.process import ProcessRef, stop

__all__ = [
    "STOP_GRACE_SECONDS",
    "ForkServerClient",
    "ForkedPod",
    "PodChild",
    "PodProcess",
    "is_child_subreaper",
    "recorded_children",
    "set_child_subreaper",
    "stop_orphans",
]

log = logging.getLogger("coder_migrate.lab.pods")

#: How long a stopping pod (or the fork server) gets before SIGKILL.
STOP_GRACE_SECONDS = 5.0


class PodProcess(Protocol):
    """What the supervisor does with a pod's process (``subprocess.Popen``, :class:`ForkedPod`)."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class ForkedPod:
    """A pod forked by the fork server and reparented to this process (its subreaper): waited
    for, signalled and killed by pid like a ``subprocess.Popen``. The pid stays ours until we
    reap it, so a signal never reaches a recycled pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone, its status unknown
                self.returncode = 255
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.02)
        return code


#: prctl(2) options: orphaned descendants are reparented to this process, not to init.
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def set_child_subreaper(on: bool) -> None:
    """Make this process the nearest subreaper of its orphaned descendants, or stop being one
    (a process that is one reaps, or leaves as zombies, every orphan below it)."""
    import ctypes

    if _libc().prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def is_child_subreaper() -> bool:
    import ctypes

    flag = ctypes.c_int(0)
    if _libc().prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_GET_CHILD_SUBREAPER)")
    return bool(flag.value)


class ForkServerClient:
    """The supervisor's side of ``coder_migrate/lab/forkserver.py``: started on first use,
    started again if it died; :meth:`spawn` returns None when it cannot fork (the caller then
    starts the pod as a new interpreter)."""

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None
        self.failed = ""

    def _ensure(self) -> subprocess.Popen[bytes] | None:
        if self.process is not None and self.process.poll() is None:
            return self.process
        if self.process is not None:
            log.warning("the pod fork server exited with %s; starting it again",
                        self.process.returncode)
        try:
            set_child_subreaper(True)
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with self.log_file.open("ab") as handle:
                # The pods' base env (what child_environment keeps of the host), so what the
                # warmed imports read at import time is what a pod's own interpreter would.
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "coder_migrate.lab.forkserver"],
                    env=host_environment(os.environ),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=handle,
                )
            ready = self.process.stdout.readline() if self.process.stdout else b""
            if not ready:
                raise OSError(f"it exited with {self.process.wait()}")
        except (OSError, AttributeError) as error:
            self._give_up(f"the pod fork server cannot start ({error}); pods start as new "
                          "interpreters")
            return None
        log.info("pod fork server pid %d ready", self.process.pid)
        return self.process

    def _give_up(self, reason: str) -> None:
        if reason != self.failed:
            log.warning("%s", reason)
        self.failed = reason
        self.close()

    def spawn(self, module: str, env: Mapping[str, str], log_file: Path) -> ForkedPod | None:
        server = self._ensure()
        if server is None or server.stdin is None or server.stdout is None:
            return None
        request = {"module": module, "env": dict(env), "log": str(log_file)}
        try:
            server.stdin.write(json.dumps(request).encode() + b"\n")
            server.stdin.flush()
            reply = json.loads(server.stdout.readline() or b"{}")
        except (OSError, ValueError) as error:
            self._give_up(f"the pod fork server failed ({type(error).__name__})")
            return None
        if "pid" not in reply:
            log.warning("the pod fork server could not fork: %s", reply.get("error", "no answer"))
            return None
        return ForkedPod(int(reply["pid"]))

    def close(self) -> None:
        """Stop the fork server; this process stops being the pods' subreaper (pods still
        running, none when the supervisor stopped them first, go to init as before)."""
        process, self.process = self.process, None
        with contextlib.suppress(OSError, AttributeError):
            set_child_subreaper(False)
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()  # its loop ends at EOF
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class PodChild:
    plan: PodPlan
    process: PodProcess
    ref: ProcessRef
    log_file: Path
    metrics: str
    started_at: float  # monotonic, for the backoff
    started_wall: float  # wall clock, for pods.json
    restarts: int
    stopping: bool = False
    stop_deadline: float | None = None  # None once SIGKILLed (or never asked to stop)

    def record(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "cluster": plan.cluster,
            "namespace": plan.namespace,
            "deployment": plan.deployment,
            "release": plan.release,
            "mode": plan.mode,
            "pid": self.ref.pid,
            "start_ticks": self.ref.start_ticks,
            "listen": f"{plan.listen[0]}:{plan.listen[1]}",
            "access_url": plan.access_url,
            "metrics": self.metrics,
            "env_hash": plan.env_hash,
            "started_at": self.started_wall,
            "restarts": self.restarts,
            "log": str(self.log_file),
            "stopping": self.stopping,
        }


# -- what the lab runtime uses ----------------------------------------------------------------


def recorded_children(state: StateLayout) -> list[ProcessRef]:
    """The proxy processes ``pods.json`` names that are still the processes it started."""
    try:
        document = json.loads(state.pods_state.read_text())
    except (OSError, ValueError):
        return []
    refs = []
    for pod in document.get("pods") or []:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            ref = ProcessRef(
                name=f"pod {pod['cluster']}/{pod['namespace']}/{pod['deployment']}",
                pid=int(pod["pid"]),
                start_ticks=int(pod["start_ticks"]),
            )
            if ref.alive():
                refs.append(ref)
    return refs


def stop_orphans(state: StateLayout, grace: float = STOP_GRACE_SECONDS) -> list[str]:
    """Stop proxies a previous supervisor left behind (it was killed); return their names."""
    orphans = recorded_children(state)
    for ref in orphans:
        log.warning("stopping %s (pid %d) left by a previous supervisor", ref.name, ref.pid)
        stop(ref, grace)
    return [ref.name for ref in orphans]
