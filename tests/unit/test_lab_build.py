"""``lab build``: the generated wrapper module, version flags, errors, the warm no-op."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from coder_migrate.errors import BuildFailed, ToolchainMissing
from coder_migrate.lab import versions
from coder_migrate.lab.build import (
    COMPONENTS,
    STAMP_NAME,
    Builder,
    Component,
    build_all,
    build_timings,
    kubernetes_version_ldflags,
    kubernetes_wrapper_go_mod,
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


def test_wrapper_go_mod_pins_every_staging_module_to_the_staging_tag() -> None:
    text = kubernetes_wrapper_go_mod(KUBERNETES_GO_MOD)
    staging = versions.KUBERNETES_STAGING_VERSION
    assert f"require k8s.io/kubernetes {versions.KUBERNETES_VERSION}" in text
    for module in ("k8s.io/api", "k8s.io/cri-streaming", "k8s.io/streaming"):
        assert f"\t{module} => {module} {staging}\n" in text
    assert "cobra" not in text  # only the staging modules are replaced
    assert "./staging" not in text


def test_wrapper_go_mod_refuses_a_go_mod_without_staging_modules() -> None:
    with pytest.raises(BuildFailed, match="names no staging modules"):
        kubernetes_wrapper_go_mod("module k8s.io/kubernetes\n")


def test_version_ldflags_make_version_report_the_pinned_release() -> None:
    flags = kubernetes_version_ldflags("2026-07-22T18:07:38Z")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion={versions.KUBERNETES_VERSION}" in flags
        assert f"-X {package}.gitMinor=36" in flags
        assert f"-X {package}.gitTreeState=clean" in flags


def test_missing_go_is_one_line_naming_the_next_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainMissing) as error:
        Builder(CacheLayout(tmp_path / "cache"))
    assert "\n" not in str(error.value)
    assert "install Go" in str(error.value) and "lab build" in str(error.value)


def test_failed_build_names_the_log_and_keeps_nothing(tmp_path: Path) -> None:
    def broken(builder: Builder, out: Path) -> None:
        builder.go_run(["build", "./does-not-exist"], cwd=tmp_path)

    layout = CacheLayout(tmp_path / "cache")
    component = Component("broken", "v0.0.1", ("broken",), broken)
    with pytest.raises(BuildFailed) as error:
        Builder(layout).build([component])
    message = str(error.value)
    log = layout.logs / "broken-v0.0.1.log"
    assert str(log) in message and "re-run `coder-migrate lab build`" in message
    assert "does-not-exist" in log.read_text()
    assert not layout.component_dir(component.key).exists()
    assert list(layout.lab.glob("broken-v0.0.1.tmp-*")) == []


def _fake_warm_cache(layout: CacheLayout) -> None:
    for component in COMPONENTS:
        directory = layout.component_dir(component.key)
        for output in component.outputs:
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


def test_each_component_directory_is_keyed_by_its_version() -> None:
    keys = {component.name: component.key for component in COMPONENTS}
    assert keys["kubernetes"] == f"kubernetes-{versions.KUBERNETES_VERSION}"
    assert keys["etcd"] == f"etcd-{versions.ETCD_VERSION}"
    assert keys["helm"] == f"helm-{versions.HELM_VERSION}"


def test_helm_environment_points_helm_at_the_built_plugin(tmp_path: Path) -> None:
    layout = CacheLayout(tmp_path)
    env = helm_environment(layout)
    plugins = Path(env["HELM_PLUGINS"])
    assert plugins == Path(env["HELM_DATA_HOME"]) / "plugins"
    assert plugins.is_relative_to(layout.component_dir(f"helm-diff-{versions.HELM_DIFF_VERSION}"))
