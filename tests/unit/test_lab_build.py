"""``lab build``: locked builds, the go arguments it may run, errors, the warm no-op."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from coder_migrate.errors import BuildFailed, ToolchainMissing
from coder_migrate.lab import versions
from coder_migrate.lab.build import (
    COMPONENTS,
    LOCK_FILES,
    STAMP_NAME,
    Builder,
    Component,
    GoToolchain,
    build_all,
    build_timings,
    check_go_arguments,
    compile_component,
    explain_go_failure,
    go_binary_name,
    kubernetes_staging_replaces,
    kubernetes_version_ldflags,
)
from coder_migrate.lab.paths import CacheLayout
from coder_migrate.lab.tools import helm_environment

KUBERNETES_GO_MOD = """\
module k8s.io/kubernetes

go 1.26.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/streaming v0.0.0
\tgithub.com/spf13/cobra v1.10.2
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/cri-streaming => ./staging/src/k8s.io/cri-streaming
\tk8s.io/streaming => ./staging/src/k8s.io/streaming
)
"""

READONLY_ENV = {"GOFLAGS": "-mod=readonly -buildvcs=false"}


class RecordingGo(GoToolchain):
    """Records every go command instead of running it (no Go needed), after the same
    argument check the real toolchain applies."""

    def __init__(self, outputs: Mapping[str, str] | None = None) -> None:
        self.go = "go"
        self.extra_env = {}
        self.commands: list[list[str]] = []
        self.outputs = dict(outputs or {})

    def run(
        self,
        args: Sequence[str],
        cwd: Path,
        log: Path,
        label: str,
        extra_env: Mapping[str, str] | None = None,
    ) -> str:
        check_go_arguments(args, {**self.environment(), **(extra_env or {})})
        self.commands.append(list(args))
        if args[0] == "build":
            out = Path(args[args.index("-o") + 1])
            for package in args[args.index("-o") + 2 :]:
                (out / go_binary_name(package)).write_bytes(package.encode())
        return self.outputs.get(args[0], "{}")


def test_staging_replaces_pin_every_staging_module_to_the_staging_tag() -> None:
    text = kubernetes_staging_replaces(KUBERNETES_GO_MOD)
    staging = versions.KUBERNETES_STAGING_VERSION
    for module in ("k8s.io/api", "k8s.io/cri-streaming", "k8s.io/streaming"):
        assert f"\t{module} => {module} {staging}\n" in text
    assert "cobra" not in text  # only the staging modules are replaced
    assert "./staging" not in text


def test_staging_replaces_refuse_a_go_mod_without_staging_modules() -> None:
    with pytest.raises(BuildFailed, match="names no staging modules"):
        kubernetes_staging_replaces("module k8s.io/kubernetes\n")


def test_version_ldflags_make_version_report_the_pinned_release() -> None:
    flags = kubernetes_version_ldflags()
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion={versions.KUBERNETES_VERSION}" in flags
        assert f"-X {package}.gitMinor=36" in flags
        assert f"-X {package}.gitTreeState=clean" in flags
        assert f"-X {package}.buildDate={{build_date}}" in flags


@pytest.mark.parametrize(
    "args",
    [
        ["get", "-tool", "k8s.io/kubernetes/cmd/kube-apiserver"],
        ["get", "k8s.io/kubernetes@latest"],
        ["install", "helm.sh/helm/v3/cmd/helm"],
        ["install", "sigs.k8s.io/kwok/cmd/kwok@upgrade"],
        ["mod", "download", "-json", "k8s.io/kubernetes"],
    ],
)
def test_go_commands_without_an_explicit_version_are_refused(args: list[str]) -> None:
    with pytest.raises(BuildFailed, match="without an explicit version"):
        check_go_arguments(args, READONLY_ENV)


@pytest.mark.parametrize("verb", ["build", "list"])
def test_go_build_and_list_need_mod_readonly(verb: str) -> None:
    with pytest.raises(BuildFailed, match="without -mod=readonly"):
        check_go_arguments([verb, "./..."], {"GOFLAGS": "-mod=mod"})
    check_go_arguments([verb, "-mod=readonly", "./..."], {"GOFLAGS": ""})
    check_go_arguments([verb, "./..."], READONLY_ENV)


def test_the_toolchain_environment_is_readonly_and_local() -> None:
    env = RecordingGo().environment()
    assert "-mod=readonly" in env["GOFLAGS"].split()
    assert env["GOTOOLCHAIN"] == "local"
    assert env["GOWORK"] == "off"


@pytest.mark.parametrize("each", COMPONENTS, ids=lambda c: c.name)
def test_every_component_builds_with_readonly_pinned_go_commands(
    each: Component, tmp_path: Path
) -> None:
    """Every go command a component's build runs passes the same check as the real run:
    builds are -mod=readonly, nothing is fetched at an unnamed version."""
    go = RecordingGo({"list": json.dumps({"Time": "2026-07-22T18:07:38Z"})})
    out = tmp_path / "out"
    compile_component(go, each, tmp_path, out, tmp_path / "log")
    verbs = [c[0] for c in go.commands]
    assert "get" not in verbs and "install" not in verbs
    build = next(c for c in go.commands if c[0] == "build")
    assert "-mod=readonly" in build
    assert "{build_date}" not in " ".join(build)
    for output in each.outputs:
        assert (out / output).is_file()


def test_every_component_has_a_committed_lock_pinning_its_version() -> None:
    for each in COMPONENTS:
        for name in LOCK_FILES:
            assert (each.lock_dir / name).is_file(), f"{each.name}: {name} not committed"
        go_mod = (each.lock_dir / "go.mod").read_text()
        assert f"{each.module} {each.version}" in go_mod
        assert each.lock_digest() in each.key


def test_a_missing_lock_is_one_line_naming_the_lock_command(tmp_path: Path) -> None:
    each = Component("etcd", "v3.6.16", "go.etcd.io/etcd/server/v3",
                     {"etcd": "go.etcd.io/etcd/server/v3"}, locks=tmp_path)
    with pytest.raises(BuildFailed) as error:
        Builder(CacheLayout(tmp_path / "cache"), go=RecordingGo()).build([each])
    assert "\n" not in str(error.value)
    assert "coder-migrate lab lock etcd" in str(error.value)


def test_a_module_the_registry_no_longer_serves_is_named_with_its_version(
    tmp_path: Path,
) -> None:
    log = tmp_path / "build.log"
    log.write_text(
        "$ go build -mod=readonly ...\n"
        "go: downloading go.etcd.io/bbolt v1.4.3\n"
        "go.etcd.io/etcd/server/v3@v3.6.16 requires\n"
        "go: go.etcd.io/bbolt@v1.4.3: reading https://proxy.golang.org/go.etcd.io/bbolt/@v/"
        "v1.4.3.zip: 404 Not Found\n"
    )
    line = explain_go_failure(log)
    assert line.startswith("module go.etcd.io/bbolt v1.4.3 (locked) cannot be had: ")
    assert "404 Not Found" in line


def test_missing_go_is_one_line_naming_the_next_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainMissing) as error:
        Builder(CacheLayout(tmp_path / "cache"))
    assert "\n" not in str(error.value)
    assert "install Go" in str(error.value) and "lab build" in str(error.value)


def test_failed_build_names_the_log_and_keeps_nothing(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    (locks / "broken").mkdir(parents=True)
    (locks / "broken" / "go.mod").write_text("module coder-migrate.local/lab/broken\n\ngo 1.26\n")
    (locks / "broken" / "go.sum").write_text("")
    layout = CacheLayout(tmp_path / "cache")
    each = Component("broken", "v0.0.1", "example.com/broken",
                     {"broken": "example.com/does-not-exist"}, locks=locks)
    with pytest.raises(BuildFailed) as error:
        Builder(layout).build([each])
    message = str(error.value)
    log = layout.logs / "broken-v0.0.1.log"
    assert str(log) in message and "\n" not in message
    assert "does-not-exist" in log.read_text()
    assert not layout.component_dir(each.key).exists()
    assert list(layout.lab.glob("broken-v0.0.1-*.tmp-*")) == []


def test_a_build_records_the_sha256_of_every_binary(tmp_path: Path) -> None:
    layout = CacheLayout(tmp_path / "cache")
    each = next(c for c in COMPONENTS if c.name == "kwok")
    assert Builder(layout, go=RecordingGo()).build([each]) == [each.key]
    stamp = json.loads((layout.component_dir(each.key) / STAMP_NAME).read_text())
    assert set(stamp["sha256"]) == {"kwok", "kwokctl"}
    assert stamp["lock"] == each.lock_digest()
    assert all(len(digest) == 64 for digest in stamp["sha256"].values())


def _fake_warm_cache(layout: CacheLayout) -> None:
    for each in COMPONENTS:
        directory = layout.component_dir(each.key)
        for output in each.outputs:
            (directory / output).parent.mkdir(parents=True, exist_ok=True)
            (directory / output).write_text("")
        (directory / STAMP_NAME).write_text(json.dumps({"seconds": 12.5}))


def test_warm_cache_is_a_no_op_without_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = CacheLayout(tmp_path / "cache")
    _fake_warm_cache(layout)
    monkeypatch.setenv("PATH", str(tmp_path))  # no Go: a warm cache must not need it
    started = time.monotonic()
    assert build_all(layout) == []
    assert time.monotonic() - started < 1.0
    assert build_timings(layout) == {c.key: 12.5 for c in COMPONENTS}


def test_each_component_directory_is_keyed_by_its_version_and_lock() -> None:
    keys = {each.name: each.key for each in COMPONENTS}
    for name, version in (
        ("kubernetes", versions.KUBERNETES_VERSION),
        ("etcd", versions.ETCD_VERSION),
        ("helm", versions.HELM_VERSION),
    ):
        each = next(c for c in COMPONENTS if c.name == name)
        assert keys[name] == f"{name}-{version}-{each.lock_digest()}"


def test_helm_environment_points_helm_at_the_built_plugin(tmp_path: Path) -> None:
    layout = CacheLayout(tmp_path)
    diff = next(c for c in COMPONENTS if c.name == "helm-diff")
    env = helm_environment(layout)
    plugins = Path(env["HELM_PLUGINS"])
    assert plugins == Path(env["HELM_DATA_HOME"]) / "plugins"
    assert plugins.is_relative_to(layout.component_dir(diff.key))


def test_lab_status_shows_every_built_binary_with_its_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from coder_migrate.cli import main

    layout = CacheLayout(tmp_path / "cache")
    kwok = next(c for c in COMPONENTS if c.name == "kwok")
    Builder(layout, go=RecordingGo()).build([kwok])
    stamp = json.loads((layout.component_dir(kwok.key) / STAMP_NAME).read_text())
    result = CliRunner().invoke(
        main,
        ["lab", "status", "--output", "json", "--cache-dir", str(layout.root),
         "--state-dir", str(tmp_path / "state")],
    )
    assert result.exit_code == 0, result.output
    listed = {b["binary"]: b for b in json.loads(result.output)["binaries"]}
    assert set(listed) == {"kwok", "kwokctl"}
    assert listed["kwok"]["sha256"] == stamp["sha256"]["kwok"]
    assert listed["kwok"]["lock"] == kwok.lock_digest()
