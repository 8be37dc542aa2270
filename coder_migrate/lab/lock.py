"""``lab lock``: write and check the lab's Go locks (``coder_migrate/lab/locks/<component>/``).

Writing a lock is a maintainer's step, run when a version in ``versions.py`` changes: a
skeleton go.mod requiring the component's module at its pinned version (for Kubernetes, with a
``replace`` for every staging module), then ``go get -tool <package>@<version>`` for each
command and ``go mod tidy``. The result is committed and reviewed like any lock file.

Checking a lock (``lab lock --check``, and the drift test in CI) resolves the build list of
the component's commands with ``go list -mod=readonly -deps`` and compiles nothing: it fails,
naming the module, when the lock no longer pins everything the build needs, or when it pins
another version than ``versions.py``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from coder_migrate.errors import BuildFailed
from coder_migrate.lab import versions
from coder_migrate.lab.build import LOCK_FILES, Component, GoToolchain, explain_go_failure

__all__ = ["LockProblem", "check_lock", "write_lock"]


class LockProblem(BuildFailed):
    """A lock that does not pin what the build needs."""


def write_lock(component: Component, go: GoToolchain | None = None) -> Path:
    """Resolve COMPONENT's lock from the module proxy and write it into its lock directory."""
    go = go or GoToolchain()
    with tempfile.TemporaryDirectory(prefix=f"lab-lock-{component.name}-") as temp:
        work = Path(temp)
        log = work / "lock.log"
        label = f"locking {component.name} {component.version}"
        kubernetes_go_mod = None
        if component.name == "kubernetes":
            info = json.loads(go.run(
                ["mod", "download", "-json",
                 f"{component.module}@{component.version}"],
                cwd=work, log=log, label=label,
            ))
            kubernetes_go_mod = Path(info["GoMod"]).read_text()
        (work / "go.mod").write_text(component.lock_go_mod(kubernetes_go_mod))
        env = {"GOFLAGS": "-mod=mod -buildvcs=false", **component.lock_env}
        packages = [f"{p}@{component.version}" for p in dict.fromkeys(component.packages.values())]
        go.run(["get", "-tool", *packages], cwd=work, log=log, label=label, extra_env=env)
        go.run(["mod", "tidy"], cwd=work, log=log, label=label, extra_env=env)
        component.lock_dir.mkdir(parents=True, exist_ok=True)
        for name in LOCK_FILES:
            shutil.copyfile(work / name, component.lock_dir / name)
    return component.lock_dir


def check_lock(component: Component, go: GoToolchain | None = None) -> list[str]:
    """Problems of COMPONENT's lock, one line each; [] when it pins the whole build."""
    missing = [n for n in LOCK_FILES if not (component.lock_dir / n).is_file()]
    if missing:
        return [f"{component.name}: {', '.join(missing)} missing in {component.lock_dir}"]
    go = go or GoToolchain()
    with tempfile.TemporaryDirectory(prefix=f"lab-lock-check-{component.name}-") as temp:
        work = Path(temp)
        for name in LOCK_FILES:
            shutil.copyfile(component.lock_dir / name, work / name)
        log = work / "check.log"
        label = f"{component.name} lock ({component.lock_dir})"
        problems = _pinned_versions(component, go, work, log, label)
        problems += _untidy(component, go, work, log, label)
        try:
            go.run(
                ["list", "-mod=readonly", "-deps", "-f",
                 "{{with .Module}}{{.Path}} {{.Version}}{{end}}",
                 *dict.fromkeys(component.packages.values())],
                cwd=work, log=log, label=label,
            )
        except BuildFailed as error:
            problems.append(str(error))
    return problems


def _untidy(
    component: Component, go: GoToolchain, work: Path, log: Path, label: str
) -> list[str]:
    """What ``go mod tidy`` would change in the lock: each module line it would add or drop."""
    env = {"GOFLAGS": "-mod=mod -buildvcs=false", **component.lock_env}
    status, diff = go.run_status(["mod", "tidy", "-diff"], cwd=work, log=log, extra_env=env)
    if status == 0:
        return []
    changed = sorted({
        _module_of(line[1:])
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---")) and _module_of(line[1:])
    })
    if not changed:
        return [f"{label}: go mod tidy -diff exited {status}: {explain_go_failure(log)}"]
    return [
        f"{label}: not tidy; `go mod tidy` would change {', '.join(changed)}; run "
        f"`coder-migrate lab lock {component.name}` and review the diff"
    ]


def _module_of(line: str) -> str:
    """``module version`` of a go.mod or go.sum line (no keyword, comment or hash)."""
    tokens = line.split("//", 1)[0].split()
    if tokens[:1] in (["require"], ["replace"], ["tool"]):
        tokens = tokens[1:]
    kept = [t.removesuffix("/go.mod") for t in tokens if not t.startswith("h1:") and t != "("]
    return " ".join(kept)


def _pinned_versions(
    component: Component, go: GoToolchain, work: Path, log: Path, label: str
) -> list[str]:
    """The lock requires the module (and, for Kubernetes, its staging modules) at the
    versions ``versions.py`` pins."""
    document = json.loads(go.run(["mod", "edit", "-json"], cwd=work, log=log, label=label))
    required = {r["Path"]: r["Version"] for r in document.get("Require") or []}
    problems = []
    found = required.get(component.module)
    if found != component.version:
        problems.append(
            f"{label}: requires {component.module} {found or '(nothing)'}, versions.py pins "
            f"{component.version}; run `coder-migrate lab lock {component.name}`"
        )
    if component.name == "kubernetes":
        for replace in document.get("Replace") or []:
            new = replace.get("New") or {}
            if new.get("Version") != versions.KUBERNETES_STAGING_VERSION:
                problems.append(
                    f"{label}: replaces {replace['Old']['Path']} with "
                    f"{new.get('Path')} {new.get('Version') or '(a directory)'}, expected "
                    f"{versions.KUBERNETES_STAGING_VERSION}"
                )
    tools = {t["Path"] for t in document.get("Tool") or []}
    for package in dict.fromkeys(component.packages.values()):
        if package not in tools:
            problems.append(f"{label}: does not list {package} as a tool")
    return problems
