"""The drift test of the lab's Go locks: the committed locks pin the whole build of every
component, and a lock edited into an unlocked state is caught, naming the module.

It resolves build lists with the real Go toolchain (``go mod tidy -diff``, ``go list
-mod=readonly -deps``) and compiles nothing; with the module cache warm from ``lab build`` it
takes seconds.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from coder_migrate.lab.build import COMPONENTS, LOCK_FILES, Component, component
from coder_migrate.lab.lock import check_lock

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("each", COMPONENTS, ids=lambda c: c.name)
def test_the_committed_lock_pins_the_whole_build(each: Component) -> None:
    assert check_lock(each) == []


def _copy(each: Component, locks: Path) -> Component:
    shutil.copytree(each.lock_dir, locks / each.name)
    for name in LOCK_FILES:
        assert (locks / each.name / name).is_file()
    return dataclasses.replace(each, locks=locks)


def _edit(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text()
    edited = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    assert edited != text, f"{pattern!r} matched nothing in {path}"
    path.write_text(edited)


def test_a_requirement_removed_from_go_mod_is_named(tmp_path: Path) -> None:
    etcd = _copy(component("etcd"), tmp_path)
    _edit(etcd.lock_dir / "go.mod", r"^\s*go\.etcd\.io/bbolt .*\n", "")
    problems = check_lock(etcd)
    assert problems, "a go.mod without go.etcd.io/bbolt still passed"
    assert any("would change" in p and "go.etcd.io/bbolt v" in p for p in problems), problems


def test_hashes_removed_from_go_sum_are_named(tmp_path: Path) -> None:
    etcd = _copy(component("etcd"), tmp_path)
    _edit(etcd.lock_dir / "go.sum", r"^go\.etcd\.io/bbolt .*\n", "")
    problems = check_lock(etcd)
    assert any("go.etcd.io/bbolt" in p for p in problems), problems


def test_a_lock_of_another_version_than_versions_py_is_refused(tmp_path: Path) -> None:
    kwok = _copy(component("kwok"), tmp_path)
    older = dataclasses.replace(kwok, version="v0.7.0")
    problems = check_lock(older)
    assert any(
        f"requires {kwok.module} {kwok.version}, versions.py pins v0.7.0" in p for p in problems
    ), problems


def test_a_staging_module_left_unpinned_is_refused(tmp_path: Path) -> None:
    kubernetes = _copy(component("kubernetes"), tmp_path)
    _edit(kubernetes.lock_dir / "go.mod", r"(k8s\.io/api => k8s\.io/api) v0\.\d+\.\d+",
          r"\1 v0.35.0")
    problems = check_lock(kubernetes)
    assert any("replaces k8s.io/api with k8s.io/api v0.35.0" in p for p in problems), problems
