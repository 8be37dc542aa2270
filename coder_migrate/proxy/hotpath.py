"""Which build of the proxy's data path runs: mypyc-compiled modules or the Python sources.

``scripts/build-proxy-hotpath`` (run by ``scripts/bootstrap``) compiles :data:`MODULES` with
mypyc into extension modules beside their sources and writes :data:`STAMP`: the SHA-256 of
every source it compiled and the interpreter's extension suffix. The Python sources stay the
reference and the fallback; both builds pass the same tests.

:func:`select` runs when :mod:`coder_migrate.proxy` is imported, before any of these modules:
the compiled build is used only when the stamp matches the sources in the tree (an edited
source never runs as its stale compiled twin), every extension module is there for this
interpreter, and ``PURE_PYTHON_PROXY`` is not set. Otherwise a finder loads each of
:data:`MODULES` from its ``.py`` file, all of them, so the two builds never mix.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

__all__ = ["ENV", "MODULES", "PACKAGE", "STAMP", "select", "source_digests"]

PACKAGE = "coder_migrate.proxy"
# The per-request path: parse, route, heads, the upstream pool, the connection, metrics,
# and the server object every connection reads its timeouts from; the TCP tunnel's frames.
MODULES = (
    "admission",
    "metrics",
    "responses",
    "http1",
    "router",
    "exchange",
    "upstream",
    "client_upstream",
    "client",
    "wsframes",
    "tunnel",
    "server",
)
# mypyc's shared library of the group (``<group>__mypyc``).
RUNTIME = "hotpath__mypyc"
STAMP = "hotpath-build.json"
ENV = "PURE_PYTHON_PROXY"
HERE = Path(__file__).resolve().parent


def source_digests(directory: Path = HERE) -> dict[str, str]:
    """SHA-256 of each compiled module's source, by module name."""
    return {
        name: hashlib.sha256((directory / f"{name}.py").read_bytes()).hexdigest()
        for name in MODULES
    }


def _extension_suffix() -> str:
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def _why_pure(directory: Path) -> str:
    """``""`` when the compiled build can be used, else why not."""
    if os.environ.get(ENV, "") not in ("", "0"):
        return f"{ENV} is set"
    stamp = directory / STAMP
    if not stamp.is_file():
        return "not built"
    try:
        built = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return f"{STAMP} unreadable"
    suffix = _extension_suffix()
    if not isinstance(built, dict) or built.get("suffix") != suffix:
        return "built for another interpreter"
    for name in (*MODULES, RUNTIME):
        if not (directory / f"{name}{suffix}").is_file():
            return f"{name}{suffix} missing"
    if built.get("sources") != source_digests(directory):
        return "sources changed since the build"
    return ""


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Loads the listed modules from their ``.py`` files even when an extension is beside."""

    def __init__(self, directory: Path) -> None:
        self.paths = {f"{PACKAGE}.{name}": directory / f"{name}.py" for name in MODULES}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        source = self.paths.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


BUILD = ""  # "compiled" or "python (<why>)", set by select()


def select(directory: Path = HERE) -> str:
    """Choose the build (once per process); returns what :data:`BUILD` says."""
    global BUILD
    if BUILD:
        return BUILD
    why = _why_pure(directory)
    if why:
        if not any(isinstance(f, _SourceFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _SourceFinder(directory))
        BUILD = f"python ({why})"
    else:
        BUILD = "compiled"
    return BUILD
