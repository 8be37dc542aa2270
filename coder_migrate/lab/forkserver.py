"""The lab's pod fork server: one Python process, the bundled proxy already imported, that
forks a process per region pod.

A pod started as ``python -m coder_migrate.proxy`` pays an interpreter start and the imports
(about 0.6 s of CPU each): 100 pods at 50 regions, on a 2-core machine, while the migration
waits for each satellite to answer. Forked from this process, a pod costs a fork. Each pod is
still a process of its own, with the pod's env only, its own log, signals and exit status,
exactly as when it was started with ``subprocess``; the pods supervisor
(``coder_migrate/lab/pods.py``) makes itself their child subreaper, so a pod (forked twice
here, its parent gone at once) is the supervisor's child: it waits for it, signals it and
sees its exit code as before.

Protocol (``python -m coder_migrate.lab.forkserver``): one JSON request a line on stdin,
``{"module": ..., "env": {...}, "log": PATH}``; one line back on stdout, ``{"pid": N}`` or
``{"error": "..."}``. It exits when stdin closes (the supervisor stopped or died).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import sys
import traceback
from collections.abc import Mapping
from typing import Any, NoReturn

__all__ = ["MODULES", "main"]

#: What the pods run (``python -m`` of these), imported once here before any fork.
MODULES = ("coder_migrate.proxy", "coder_migrate.lab.provisionerd")
#: What they import when they run: the CLI's ``proxy serve`` and the proxy's server.
_WARM = ("coder_migrate.cli", "coder_migrate.cli.proxy", "coder_migrate.proxy.app",
         "coder_migrate.lab.provisionerd")


def _warm() -> None:
    for name in _WARM:
        importlib.import_module(name)


def _become_pod(module: str, env: Mapping[str, str], log: str) -> NoReturn:
    """In the forked child: the pod's stdio and env, then ``python -m MODULE``."""
    code: int = 1
    try:
        out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        # Nothing of the fork server's (its requests pipe, the answer pipe) stays open.
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = [module]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
            if isinstance(done.code, str):
                print(done.code, file=sys.stderr)
        except BaseException:  # the pod's crash goes to its log, as Python's own would
            traceback.print_exc()
            code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def spawn(module: str, env: Mapping[str, str], log: str) -> int:
    """Fork a pod running MODULE; its pid. Forked twice: the pod's parent exits at once, so
    the pod is reparented to the nearest subreaper (the pods supervisor)."""
    if module not in MODULES:
        raise ValueError(f"{module!r} is not a pod module ({', '.join(MODULES)})")
    reader, writer = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(reader)
            pod = os.fork()
            if pod == 0:
                os.close(writer)
                _become_pod(module, env, log)
            os.write(writer, str(pod).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answer:
        text = answer.read()
    os.waitpid(middle, 0)
    if not text:
        raise OSError("the pod's fork failed")
    return int(text)


def main() -> None:
    # Answers go to a private copy of stdout: whatever a warmed module prints goes to stderr.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    _warm()
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        reply: dict[str, Any]
        try:
            request = json.loads(line)
            pid = spawn(str(request["module"]), dict(request["env"]), str(request["log"]))
            reply = {"pid": pid}
        except (OSError, ValueError, KeyError, TypeError) as error:
            reply = {"error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
