"""``ansible-inventory --list``, the one way the inventory is read, as a child process.

Light on imports on purpose: the CLI starts the listing (:func:`start`) as soon as it knows
the inventory directory, before it imports the engine, so Ansible's start-up (about half a
second) overlaps with ours. :func:`result` then waits for that same process, or runs one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["ansible_inventory_executable", "result", "start"]

# A file Ansible cannot parse must be an error, not a warning and an empty inventory.
_ENVIRONMENT = {
    "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
    "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
    "ANSIBLE_NOCOLOR": "1",
    "ANSIBLE_DEPRECATION_WARNINGS": "False",
}
_started: dict[Path, subprocess.Popen[str]] = {}


def ansible_inventory_executable() -> str | None:
    """``ansible-inventory`` beside this interpreter (the venv), else on ``PATH``."""
    beside = Path(sys.executable).parent / "ansible-inventory"
    if beside.is_file():
        return str(beside)
    return shutil.which("ansible-inventory")


def _spawn(directory: Path, executable: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [executable, "-i", str(directory), "--list"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **_ENVIRONMENT},
    )


def start(directory: Path) -> None:
    """Begin listing *directory* in the background, when it looks like an inventory."""
    key = directory.resolve()
    executable = ansible_inventory_executable()
    hosts_files = ("hosts.yml", "hosts.yaml", "hosts")
    if key in _started or executable is None or not any(
        (directory / name).is_file() for name in hosts_files
    ):
        return
    _started[key] = _spawn(directory, executable)


def result(directory: Path, executable: str) -> subprocess.CompletedProcess[str]:
    """The listing of *directory*: the one :func:`start` began, else a new run."""
    process = _started.pop(directory.resolve(), None) or _spawn(directory, executable)
    stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@atexit.register
def _stop_unused() -> None:
    # A listing nobody asked for (the command failed before reading the inventory).
    for process in _started.values():
        if process.poll() is None:
            process.kill()
        process.wait()
    _started.clear()
