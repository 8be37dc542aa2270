"""``lab build``: build the lab's binaries from locked Go modules into a cache.

Every component is built from a committed lock, ``coder_migrate/lab/locks/<component>/``
(``go.mod`` + ``go.sum``, written by ``coder-migrate lab lock`` and reviewed like any lock
file), with ``-mod=readonly``: a build never resolves "latest" and never writes a new
requirement, so a registry that publishes a newer release changes nothing.

Each component goes into its own directory keyed by its version and the digest of its lock
(``<cache>/lab/<component>-<version>-<lock digest>/``), written to a temporary directory first
and renamed when complete, so a warm cache is a handful of ``stat`` calls. Build logs go to
``<cache>/lab/logs/``; each component records its time and the sha256 of every binary in
``.built.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from coder_migrate.errors import BuildFailed, ToolchainMissing, redact
from coder_migrate.lab import versions
from coder_migrate.lab.paths import CacheLayout

MINIMUM_GO = (1, 26)
STAMP_NAME = ".built.json"
LOG_TAIL_LINES = 5
LOCKS_DIR = Path(__file__).parent / "locks"
LOCK_FILES = ("go.mod", "go.sum")

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/", re.MULTILINE)
# What go prints when a module of the build list cannot be had: "<module>@<version>: <why>".
_MODULE_FAILURE = re.compile(
    r"(?:verifying |go: (?:downloading )?)?(?P<module>[A-Za-z0-9.\-_~/]+\.[A-Za-z0-9.\-_~/]+)"
    r"@(?P<version>v[0-9][^\s:]*): (?P<why>.+)"
)


@dataclass(frozen=True)
class Component:
    """One thing ``lab build`` makes, from its lock in ``locks/<name>/``.

    *packages* maps each output file (relative to the component's directory) to the main
    package it is built from; all are built in one ``go build`` so shared packages compile
    once.
    """

    name: str
    version: str
    module: str
    packages: Mapping[str, str]
    ldflags: str = "-s -w"
    tags: str = ""
    lock_env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for ``lab lock`` only (resolving the lock, never building)."""
    extra_files: Mapping[str, str] = field(default_factory=dict)
    """Text files written next to the binaries (the helm-diff plugin.yaml)."""
    locks: Path = LOCKS_DIR

    @property
    def lock_dir(self) -> Path:
        return self.locks / self.name

    @property
    def outputs(self) -> tuple[str, ...]:
        return (*self.packages, *self.extra_files)

    def lock_digest(self) -> str:
        """First 12 hex digits of the sha256 of go.mod and go.sum (``-`` when unlocked)."""
        digest = hashlib.sha256()
        for name in LOCK_FILES:
            path = self.lock_dir / name
            if not path.is_file():
                return "-"
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()[:12]

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}-{self.lock_digest()}"

    def lock_go_mod(self, module_go_mod: str | None = None) -> str:
        """The skeleton go.mod ``lab lock`` starts from; ``go get -tool`` fills it in."""
        replaces = ""
        if module_go_mod is not None:
            replaces = "\n" + kubernetes_staging_replaces(module_go_mod)
        return (
            "// The lock of one lab component: written by `coder-migrate lab lock`, built with\n"
            "// -mod=readonly by `coder-migrate lab build`. Review changes like any lock file.\n"
            f"module coder-migrate.local/lab/{self.name}\n\n"
            f"go {versions.GO_LANGUAGE_VERSION}\n\n"
            f"require {self.module} {self.version}\n{replaces}"
        )


@dataclass(frozen=True)
class LabBinaries:
    """Paths of every built binary, and the helm plugin/data directories."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    kwok: Path
    kwokctl: Path
    helm: Path
    helm_data_home: Path
    helm_plugins: Path

    @classmethod
    def from_cache(cls, layout: CacheLayout) -> LabBinaries:
        k8s, etcd, kwok, helm, diff = (
            layout.component_dir(component(name).key)
            for name in ("kubernetes", "etcd", "kwok", "helm", "helm-diff")
        )
        return cls(
            kube_apiserver=k8s / "kube-apiserver",
            kube_controller_manager=k8s / "kube-controller-manager",
            kube_scheduler=k8s / "kube-scheduler",
            kubectl=k8s / "kubectl",
            etcd=etcd / "etcd",
            kwok=kwok / "kwok",
            kwokctl=kwok / "kwokctl",
            helm=helm / "helm",
            helm_data_home=diff / "data",
            helm_plugins=diff / "data" / "plugins",
        )

    def missing(self) -> list[Path]:
        """Binaries the clusters need that are not built yet (helm is not one of them)."""
        paths = [
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kubectl,
            self.etcd,
            self.kwok,
            self.kwokctl,
        ]
        return [path for path in paths if not path.is_file()]


class GoToolchain:
    """Runs ``go`` with the lab's fixed environment, logging to one file per component.

    Every ``go get``, ``go install`` and ``go build`` it runs names an explicit version or
    runs with ``-mod=readonly``: :func:`check_go_arguments` refuses anything else.
    """

    def __init__(self, extra_env: Mapping[str, str] | None = None) -> None:
        self.go = find_go()
        self.extra_env = dict(extra_env or {})

    def environment(self, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "CGO_ENABLED": "0",
                # Never fetch another toolchain; the registry (module proxy) is the only source.
                "GOTOOLCHAIN": "local",
                "GOWORK": "off",
                "GOFLAGS": "-mod=readonly -buildvcs=false",
            }
        )
        env.pop("GOBIN", None)
        env.update(self.extra_env)
        env.update(extra_env or {})
        return env

    def run(
        self,
        args: Sequence[str],
        cwd: Path,
        log: Path,
        label: str,
        extra_env: Mapping[str, str] | None = None,
    ) -> str:
        """Run ``go ARGS`` in CWD, appending its output to LOG; return its stdout."""
        returncode, output = self.run_status(args, cwd, log, extra_env)
        if returncode != 0:
            raise BuildFailed(
                f"{label}: go {args[0]} exited {returncode}: "
                f"{redact(explain_go_failure(log))}; full log: {log}"
            )
        return output

    def run_status(
        self,
        args: Sequence[str],
        cwd: Path,
        log: Path,
        extra_env: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        """Run ``go ARGS`` like :meth:`run`; return its exit status and stdout."""
        check_go_arguments(args, {**self.environment(), **(extra_env or {})})
        with log.open("a") as log_file, tempfile.TemporaryFile("w+") as stdout:
            log_file.write(f"$ go {' '.join(args)}\n")
            log_file.flush()
            result = subprocess.run(
                [self.go, *args],
                cwd=cwd,
                env=self.environment(extra_env),
                stdout=stdout,
                stderr=log_file,
                text=True,
                check=False,
            )
            stdout.seek(0)
            output = stdout.read()
            log_file.write(output)
        return result.returncode, output


def check_go_arguments(args: Sequence[str], env: Mapping[str, str]) -> None:
    """Refuse a go command that could resolve a version nobody locked.

    ``go get``, ``go install`` and ``go mod download`` must name ``@version`` on every
    package or module (never ``@latest`` or ``@upgrade``); ``go build`` and ``go list`` must
    run with ``-mod=readonly`` (from the arguments or GOFLAGS).
    """
    if not args:
        raise BuildFailed("internal: an empty go command")
    verb = " ".join(args[:2]) if args[0] == "mod" else args[0]
    targets = [a for a in args[1:] if not a.startswith("-") and a != "download"]
    if verb in {"get", "install", "mod download"}:
        unpinned = [
            t for t in targets
            if "@" not in t or t.rsplit("@", 1)[1] in {"latest", "upgrade", "patch", ""}
        ]
        if unpinned:
            raise BuildFailed(
                f"internal: go {verb} without an explicit version: {', '.join(unpinned)}"
            )
    elif verb in {"build", "list"}:
        flags = [*args[1:], *env.get("GOFLAGS", "").split()]
        if "-mod=readonly" not in flags:
            raise BuildFailed(f"internal: go {verb} without -mod=readonly")


def explain_go_failure(log: Path) -> str:
    """One line for a failed go command: the module and version when one could not be had."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    for line in lines:
        match = _MODULE_FAILURE.search(line)
        if match and not line.startswith("$ "):
            why = match["why"].strip()
            return (
                f"module {match['module']} {match['version']} (locked) cannot be had: {why}"
            )
    useful = [line for line in lines if line and not line.startswith("$ ")]
    return useful[-1] if useful else "(no output)"


def find_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolchainMissing(
            "the Go toolchain ('go') is not on PATH; install Go >= "
            f"{MINIMUM_GO[0]}.{MINIMUM_GO[1]} and re-run `coder-migrate lab build`"
        )
    found = subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, check=False
    ).stdout.strip()
    match = re.match(r"go(\d+)\.(\d+)", found)
    if match is None or (int(match[1]), int(match[2])) < MINIMUM_GO:
        raise ToolchainMissing(
            f"Go {found or '(unknown version)'} is too old; the lab needs Go >= "
            f"{MINIMUM_GO[0]}.{MINIMUM_GO[1]}: install it and re-run `coder-migrate lab build`"
        )
    return go


class Builder:
    """Builds components from their locks into the cache, one line of progress each."""

    def __init__(
        self, layout: CacheLayout, console: Console | None = None, go: GoToolchain | None = None
    ) -> None:
        self.layout = layout
        self.console = console or Console(stderr=True)
        self.go = go or GoToolchain()

    def build(self, components: Sequence[Component], force: bool = False) -> list[str]:
        """Build what is missing; return the keys of the components built."""
        todo = [c for c in components if force or not is_built(self.layout, c)]
        if not todo:
            return []
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        built: list[str] = []
        for component in todo:
            with self.console.status(f"building {component.name} {component.version}"):
                seconds = self._build_one(component)
            self.console.print(
                f"built {component.name} {component.version} in {seconds:.0f} s", highlight=False
            )
            built.append(component.key)
        return built

    def _build_one(self, component: Component) -> float:
        unlocked = [n for n in LOCK_FILES if not (component.lock_dir / n).is_file()]
        if unlocked:
            raise BuildFailed(
                f"{component.name}: no lock ({', '.join(unlocked)} missing in "
                f"{component.lock_dir}); run `coder-migrate lab lock {component.name}`"
            )
        final = self.layout.component_dir(component.key)
        staging = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        log = self.layout.logs / f"{component.name}-{component.version}.log"
        log.write_text(f"# {component.key} started {_now()}\n")
        started = time.monotonic()
        try:
            work = self.layout.work / component.name
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            for name in LOCK_FILES:
                shutil.copyfile(component.lock_dir / name, work / name)
            compile_component(self.go, component, work, staging, log)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        seconds = time.monotonic() - started
        stamp = {
            "component": component.name,
            "version": component.version,
            "lock": component.lock_digest(),
            "seconds": seconds,
            "built_at": _now(),
            "sha256": {name: sha256_file(staging / name) for name in component.packages},
        }
        (staging / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        return seconds


def compile_component(
    go: GoToolchain, component: Component, work: Path, out: Path, log: Path
) -> None:
    """``go build -mod=readonly`` of the component's packages in WORK (its lock) into OUT."""
    label = f"building {component.name} {component.version}"
    ldflags = component.ldflags
    if "{build_date}" in ldflags:
        info = json.loads(go.run(["list", "-mod=readonly", "-m", "-json", component.module],
                                 cwd=work, log=log, label=label))
        ldflags = ldflags.replace("{build_date}", str(info.get("Time", "1970-01-01T00:00:00Z")))
    binaries = work / "bin"
    binaries.mkdir(exist_ok=True)
    args = ["build", "-mod=readonly", "-trimpath"]
    if component.tags:
        args += ["-tags", component.tags]
    packages = list(dict.fromkeys(component.packages.values()))
    go.run([*args, "-ldflags", ldflags, "-o", f"{binaries}/", *packages],
           cwd=work, log=log, label=label)
    for output, package in component.packages.items():
        target = out / output
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(binaries / go_binary_name(package), target)
    shutil.rmtree(binaries, ignore_errors=True)
    for output, text in component.extra_files.items():
        target = out / output
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def go_binary_name(package: str) -> str:
    """The file ``go build -o DIR/`` writes for PACKAGE (a major-version suffix is skipped)."""
    parts = package.split("/")
    if len(parts) > 1 and re.fullmatch(r"v[0-9]+", parts[-1]):
        return parts[-2]
    return parts[-1]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_built(layout: CacheLayout, component: Component) -> bool:
    """The component's stamp and every file it produces are in the cache."""
    directory = layout.component_dir(component.key)
    return (directory / STAMP_NAME).is_file() and all(
        (directory / output).exists() for output in component.outputs
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def last_log_lines(log: Path, count: int = LOG_TAIL_LINES) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return lines[-count:]


# --- the components --------------------------------------------------------------------------


def kubernetes_staging_replaces(kubernetes_go_mod: str) -> str:
    """A ``replace`` block pinning every staging module k8s.io/kubernetes names.

    k8s.io/kubernetes requires its staging modules at v0.0.0 with ``replace => ./staging/...``;
    replaces of a dependency are ignored, so the lock maps each to its v0.<minor>.<patch> tag.
    """
    staging = sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))
    if not staging:
        raise BuildFailed(
            f"{versions.KUBERNETES_MODULE}@{versions.KUBERNETES_VERSION}: its go.mod names no "
            "staging modules; check KUBERNETES_VERSION in coder_migrate/lab/versions.py"
        )
    replaces = "\n".join(
        f"\t{module} => {module} {versions.KUBERNETES_STAGING_VERSION}" for module in staging
    )
    return f"replace (\n{replaces}\n)\n"


def kubernetes_version_ldflags() -> str:
    """``-X`` flags so ``/version`` reports the pinned release; ``{build_date}`` is filled in
    from the module's own release time, so two builds give the same binary."""
    version = versions.KUBERNETES_VERSION
    major, minor = version.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "{build_date}",
    }
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{name}={value}" for name, value in values.items()]
    return " ".join(flags)


HELM_DIFF_PLUGIN_YAML = """\
name: "diff"
version: "{version}"
usage: "Preview helm upgrade changes as a diff"
description: "Preview helm upgrade changes as a diff (built by coder-migrate lab build)"
command: "$HELM_PLUGIN_DIR/bin/diff"
"""


def _components(locks: Path = LOCKS_DIR) -> tuple[Component, ...]:
    kwok_consts = f"{versions.KWOK_MODULE}/pkg/consts"
    kubernetes = versions.KUBERNETES_MODULE
    return (
        Component(
            "kubernetes",
            versions.KUBERNETES_VERSION,
            kubernetes,
            {name: f"{kubernetes}/cmd/{name}" for name in versions.KUBERNETES_COMMANDS},
            ldflags=kubernetes_version_ldflags(),
            tags="selinux,notest,grpcnotrace",
            locks=locks,
        ),
        Component(
            "etcd", versions.ETCD_VERSION, versions.ETCD_MODULE,
            {"etcd": versions.ETCD_MODULE}, locks=locks,
        ),
        Component(
            "kwok",
            versions.KWOK_VERSION,
            versions.KWOK_MODULE,
            {name: f"{versions.KWOK_MODULE}/cmd/{name}" for name in ("kwok", "kwokctl")},
            ldflags=(
                f"-s -w -X {kwok_consts}.Version={versions.KWOK_VERSION.lstrip('v')} "
                f"-X {kwok_consts}.KubeVersion={versions.KUBERNETES_VERSION.lstrip('v')}"
            ),
            locks=locks,
        ),
        Component(
            "helm",
            versions.HELM_VERSION,
            versions.HELM_MODULE,
            {"helm": f"{versions.HELM_MODULE}/cmd/helm"},
            # pyhelm3 parses `helm version`: it must print a full semver.
            ldflags=f"-s -w -X {versions.HELM_MODULE}/internal/version.version="
            f"{versions.HELM_VERSION}",
            locks=locks,
        ),
        Component(
            "helm-diff",
            versions.HELM_DIFF_VERSION,
            versions.HELM_DIFF_MODULE,
            # helm runs the plugin's own name for it (bin/diff), as the upstream plugin.yaml.
            {"data/plugins/diff/bin/diff": versions.HELM_DIFF_MODULE},
            ldflags=f"-s -w -X {versions.HELM_DIFF_MODULE}/cmd.Version="
            f"{versions.HELM_DIFF_VERSION.lstrip('v')}",
            # The checksum database behind the module proxy has no entry for helm-diff: the
            # lock records its hash in go.sum, and builds check against that.
            lock_env={"GONOSUMDB": "github.com/databus23/helm-diff"},
            extra_files={
                "data/plugins/diff/plugin.yaml": HELM_DIFF_PLUGIN_YAML.format(
                    version=versions.HELM_DIFF_VERSION.lstrip("v")
                )
            },
            locks=locks,
        ),
    )


COMPONENTS: tuple[Component, ...] = _components()


def component(name: str) -> Component:
    for candidate in COMPONENTS:
        if candidate.name == name:
            return candidate
    raise BuildFailed(
        f"no lab component {name!r} (components: {', '.join(c.name for c in COMPONENTS)})"
    )


def build_all(
    layout: CacheLayout, console: Console | None = None, force: bool = False
) -> list[str]:
    """Build every missing component; a warm cache returns [] without touching Go."""
    if not force and all(is_built(layout, c) for c in COMPONENTS):
        return []
    return Builder(layout, console).build(COMPONENTS, force=force)


def build_stamps(layout: CacheLayout) -> dict[str, dict[str, Any]]:
    """The ``.built.json`` of every cached component, by component name."""
    stamps: dict[str, dict[str, Any]] = {}
    for each in COMPONENTS:
        stamp = layout.component_dir(each.key) / STAMP_NAME
        if stamp.is_file():
            stamps[each.name] = json.loads(stamp.read_text())
    return stamps


def built_binaries(layout: CacheLayout) -> list[dict[str, str]]:
    """Every cached binary with its component, version, lock digest and sha256."""
    return [
        {"component": name, "version": stamp["version"], "lock": stamp.get("lock", ""),
         "binary": binary, "sha256": digest}
        for name, stamp in build_stamps(layout).items()
        for binary, digest in stamp.get("sha256", {}).items()
    ]


def build_timings(layout: CacheLayout) -> dict[str, float]:
    """Seconds each cached component took to build (from its ``.built.json``)."""
    return {
        component(name).key: float(stamp["seconds"])
        for name, stamp in build_stamps(layout).items()
    }
