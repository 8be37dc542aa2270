"""``lab build``: build the lab's binaries once, from the official Go modules, into a cache.

Each component goes into its own directory keyed by its version
(``<cache>/lab/<component>-<version>/``), written to a temporary directory first and renamed
when complete, so a warm cache is a handful of ``stat`` calls. Build logs go to
``<cache>/lab/logs/``; each component records how long it took in ``.built.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from coder_migrate.errors import BuildFailed, ToolchainMissing, redact
from coder_migrate.lab import versions
from coder_migrate.lab.paths import CacheLayout

MINIMUM_GO = (1, 26)
STAMP_NAME = ".built.json"
LOG_TAIL_LINES = 5

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/", re.MULTILINE)


@dataclass(frozen=True)
class Component:
    """One thing ``lab build`` makes: a name, a version and the files it must produce."""

    name: str
    version: str
    outputs: tuple[str, ...]
    build: Callable[[Builder, Path], None]

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


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
        k8s = layout.component_dir(_key("kubernetes", versions.KUBERNETES_VERSION))
        etcd = layout.component_dir(_key("etcd", versions.ETCD_VERSION))
        kwok = layout.component_dir(_key("kwok", versions.KWOK_VERSION))
        helm = layout.component_dir(_key("helm", versions.HELM_VERSION))
        diff = layout.component_dir(_key("helm-diff", versions.HELM_DIFF_VERSION))
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


def _key(name: str, version: str) -> str:
    return f"{name}-{version}"


class Builder:
    """Runs the Go toolchain for each component, logging to one file per component."""

    def __init__(self, layout: CacheLayout, console: Console | None = None) -> None:
        self.layout = layout
        self.console = console or Console(stderr=True)
        self.go = self._find_go()
        self._log: Path | None = None
        self._label = ""
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    @staticmethod
    def _find_go() -> str:
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

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "CGO_ENABLED": "0",
                # Never fetch another toolchain; the registry (module proxy) is the only source.
                "GOTOOLCHAIN": "local",
                "GOWORK": "off",
                "GOFLAGS": "-mod=mod -buildvcs=false",
            }
        )
        env.pop("GOBIN", None)
        return env

    def go_run(
        self, args: Sequence[str], cwd: Path, extra_env: dict[str, str] | None = None
    ) -> str:
        """Run ``go ARGS`` in CWD, logging its stderr line by line; return its stdout."""
        assert self._log is not None
        env = self.environment()
        env.update(extra_env or {})
        with self._log.open("a") as log, tempfile.TemporaryFile("w+") as stdout:
            log.write(f"$ go {' '.join(args)}\n")
            log.flush()
            process = subprocess.Popen(
                [self.go, *args],
                cwd=cwd,
                env=env,
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert process.stderr is not None
            for line in process.stderr:
                log.write(line)
                self._show(line.strip())
            returncode = process.wait()
            stdout.seek(0)
            output = stdout.read()
            log.write(output)
        if returncode != 0:
            raise BuildFailed(
                f"building {self._label} failed (go {args[0]} exited {returncode}): "
                f"{redact(_last_line(self._log))}; full log: {self._log}; fix it and re-run "
                "`coder-migrate lab build`"
            )
        return output

    def _show(self, detail: str) -> None:
        if self._progress is not None and self._task is not None and detail:
            self._progress.update(self._task, detail=detail[-70:])

    def build(self, components: Sequence[Component], force: bool = False) -> list[str]:
        """Build what is missing; return the keys of the components built."""
        todo = [c for c in components if force or not self.is_built(c)]
        if not todo:
            return []
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        built: list[str] = []
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TextColumn("[dim]{task.fields[detail]}"),
        )
        with Progress(*columns, console=self.console, transient=False) as progress:
            self._progress = progress
            for component in todo:
                task = progress.add_task(f"building {component.key}", total=1, detail="")
                self._task = task
                seconds = self._build_one(component)
                progress.update(
                    task,
                    completed=1,
                    description=f"built {component.key} in {seconds:.0f} s",
                    detail="",
                )
                built.append(component.key)
            self._progress = self._task = None
        return built

    def is_built(self, component: Component) -> bool:
        return is_built(self.layout, component)

    def _build_one(self, component: Component) -> float:
        final = self.layout.component_dir(component.key)
        staging = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self._log = self.layout.logs / f"{component.key}.log"
        self._log.write_text(f"# {component.key} started {_now()}\n")
        self._label = component.key
        started = time.monotonic()
        try:
            component.build(self, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        seconds = time.monotonic() - started
        stamp = {
            "component": component.name,
            "version": component.version,
            "seconds": seconds,
            "built_at": _now(),
        }
        (staging / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        return seconds

    def work_dir(self, component_key: str) -> Path:
        directory = self.layout.work / component_key
        directory.mkdir(parents=True, exist_ok=True)
        return directory


def is_built(layout: CacheLayout, component: Component) -> bool:
    """The component's stamp and every file it produces are in the cache."""
    directory = layout.component_dir(component.key)
    return (directory / STAMP_NAME).is_file() and all(
        (directory / output).exists() for output in component.outputs
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def last_log_lines(log: Path, count: int = LOG_TAIL_LINES) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return lines[-count:]


# --- the components --------------------------------------------------------------------------


def kubernetes_wrapper_go_mod(kubernetes_go_mod: str) -> str:
    """The wrapper module's go.mod: require k8s.io/kubernetes and pin every staging module.

    k8s.io/kubernetes requires its staging modules at v0.0.0 with ``replace => ./staging/...``;
    replaces of a dependency are ignored, so the wrapper maps each to its v0.<minor>.<patch> tag.
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
    return (
        "// Generated by `coder-migrate lab build`; do not edit.\n"
        "module coder-migrate.local/lab/kubernetes\n\n"
        f"go {versions.GO_LANGUAGE_VERSION}\n\n"
        f"require {versions.KUBERNETES_MODULE} {versions.KUBERNETES_VERSION}\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def kubernetes_version_ldflags(build_date: str) -> str:
    version = versions.KUBERNETES_VERSION
    major, minor = version.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{name}={value}" for name, value in values.items()]
    return " ".join(flags)


def _build_kubernetes(builder: Builder, out: Path) -> None:
    work = builder.work_dir(_key("kubernetes", versions.KUBERNETES_VERSION))
    module = f"{versions.KUBERNETES_MODULE}@{versions.KUBERNETES_VERSION}"
    info = json.loads(builder.go_run(["mod", "download", "-json", module], cwd=work))
    go_mod_text = Path(info["GoMod"]).read_text()
    (work / "go.mod").write_text(kubernetes_wrapper_go_mod(go_mod_text))
    (work / "go.sum").unlink(missing_ok=True)
    packages = [f"{versions.KUBERNETES_MODULE}/cmd/{name}" for name in versions.KUBERNETES_COMMANDS]
    builder.go_run(["get", "-tool", *packages], cwd=work)
    build_date = json.loads(Path(info["Info"]).read_text()).get("Time", "1970-01-01T00:00:00Z")
    # One invocation for all three commands, so the shared packages compile once.
    builder.go_run(
        [
            "build",
            "-v",
            "-trimpath",
            "-tags",
            "selinux,notest,grpcnotrace",
            "-ldflags",
            kubernetes_version_ldflags(build_date),
            "-o",
            f"{out}/",
            *packages,
        ],
        cwd=work,
    )


def _wrapper_build(
    builder: Builder,
    key: str,
    module: str,
    version: str,
    output: Path,
    ldflags: str,
    extra_env: dict[str, str] | None = None,
) -> None:
    """Build MODULE's main package from a generated wrapper module (its replaces are ignored)."""
    work = builder.work_dir(key)
    (work / "go.mod").write_text(
        "// Generated by `coder-migrate lab build`; do not edit.\n"
        f"module coder-migrate.local/lab/{key}\n\ngo {versions.GO_LANGUAGE_VERSION}\n"
    )
    (work / "go.sum").unlink(missing_ok=True)
    builder.go_run(["get", f"{module}@{version}"], cwd=work, extra_env=extra_env)
    builder.go_run(
        ["build", "-trimpath", "-ldflags", ldflags, "-o", str(output), module],
        cwd=work,
        extra_env=extra_env,
    )


def _build_etcd(builder: Builder, out: Path) -> None:
    version = versions.ETCD_VERSION
    _wrapper_build(
        builder, _key("etcd", version), versions.ETCD_MODULE, version, out / "etcd", "-s -w"
    )


def _go_install(
    builder: Builder,
    out: Path,
    packages: list[str],
    ldflags: str,
    extra_env: dict[str, str] | None = None,
) -> None:
    # `go install pkg@version` needs no wrapper module (these modules have no replace lines).
    work = builder.work_dir("install")
    env = {"GOBIN": str(out), "GOFLAGS": "-buildvcs=false", **(extra_env or {})}
    builder.go_run(
        ["install", "-trimpath", "-ldflags", ldflags, *packages], cwd=work, extra_env=env
    )


def _build_kwok(builder: Builder, out: Path) -> None:
    version = versions.KWOK_VERSION
    consts = f"{versions.KWOK_MODULE}/pkg/consts"
    ldflags = (
        f"-s -w -X {consts}.Version={version.lstrip('v')} "
        f"-X {consts}.KubeVersion={versions.KUBERNETES_VERSION.lstrip('v')}"
    )
    packages = [f"{versions.KWOK_MODULE}/cmd/{name}@{version}" for name in ("kwok", "kwokctl")]
    _go_install(builder, out, packages, ldflags)


def _build_helm(builder: Builder, out: Path) -> None:
    version = versions.HELM_VERSION
    ldflags = f"-s -w -X {versions.HELM_MODULE}/internal/version.version={version}"
    _go_install(builder, out, [f"{versions.HELM_MODULE}/cmd/helm@{version}"], ldflags)


HELM_DIFF_PLUGIN_YAML = """\
name: "diff"
version: "{version}"
usage: "Preview helm upgrade changes as a diff"
description: "Preview helm upgrade changes as a diff (built by coder-migrate lab build)"
command: "$HELM_PLUGIN_DIR/bin/diff"
"""


def _build_helm_diff(builder: Builder, out: Path) -> None:
    version = versions.HELM_DIFF_VERSION
    plugin_dir = out / "data" / "plugins" / "diff"
    (plugin_dir / "bin").mkdir(parents=True)
    ldflags = f"-s -w -X {versions.HELM_DIFF_MODULE}/cmd.Version={version.lstrip('v')}"
    # The checksum database behind the module proxy has no entry for helm-diff; the module
    # itself still comes from the proxy and go.sum records its hash. A wrapper module is used
    # because `go install pkg@version` also asks for the version list, which is refused.
    _wrapper_build(
        builder,
        _key("helm-diff", version),
        versions.HELM_DIFF_MODULE,
        version,
        # helm runs the plugin's own name for it (bin/diff), as the upstream plugin.yaml does.
        plugin_dir / "bin" / "diff",
        ldflags,
        extra_env={"GONOSUMDB": "github.com/databus23/helm-diff"},
    )
    (plugin_dir / "plugin.yaml").write_text(
        HELM_DIFF_PLUGIN_YAML.format(version=version.lstrip("v"))
    )


COMPONENTS: tuple[Component, ...] = (
    Component(
        "kubernetes", versions.KUBERNETES_VERSION, versions.KUBERNETES_COMMANDS, _build_kubernetes
    ),
    Component("etcd", versions.ETCD_VERSION, ("etcd",), _build_etcd),
    Component("kwok", versions.KWOK_VERSION, ("kwok", "kwokctl"), _build_kwok),
    Component("helm", versions.HELM_VERSION, ("helm",), _build_helm),
    Component(
        "helm-diff",
        versions.HELM_DIFF_VERSION,
        ("data/plugins/diff/plugin.yaml", "data/plugins/diff/bin/diff"),
        _build_helm_diff,
    ),
)


def build_all(
    layout: CacheLayout, console: Console | None = None, force: bool = False
) -> list[str]:
    """Build every missing component; a warm cache returns [] without touching Go."""
    if not force and all(is_built(layout, c) for c in COMPONENTS):
        return []
    return Builder(layout, console).build(COMPONENTS, force=force)


def build_timings(layout: CacheLayout) -> dict[str, float]:
    """Seconds each cached component took to build (from its ``.built.json``)."""
    timings: dict[str, float] = {}
    for component in COMPONENTS:
        stamp = layout.component_dir(component.key) / STAMP_NAME
        if stamp.is_file():
            timings[component.key] = float(json.loads(stamp.read_text())["seconds"])
    return timings
