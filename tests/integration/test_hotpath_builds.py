"""Both builds of the proxy's data path pass the same tests (coder_migrate/proxy/hotpath.py).

The suite runs the build the checkout has: compiled with mypyc after ``scripts/bootstrap``
on a machine with a C compiler, else the Python sources. Here every proxy test file
(``tests/unit/test_proxy_*.py``, ``tests/integration/test_proxy_*.py``) runs once more in a
child pytest with the other build, and the selection itself is checked: a matching build is
used, an edited source or ``PURE_PYTHON_PROXY`` falls back to Python for every module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from coder_migrate.proxy import hotpath

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build-proxy-hotpath"
PROBE = (
    "import json; from coder_migrate.proxy import hotpath, client, http1, metrics, tunnel, "
    "wsframes; print(json.dumps([hotpath.BUILD, client.__file__, http1.__file__, "
    "metrics.__file__, tunnel.__file__, wsframes.__file__]))"
)


def _toolchain_missing() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler) is None


def _probe(env: dict[str, str], root: Path = ROOT) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=root,
        env={**env, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return list(json.loads(out))


def _built() -> bool:
    return (
        subprocess.run([sys.executable, str(BUILD_SCRIPT), "--check"], check=False).returncode == 0
    )


def test_the_checkout_runs_the_build_bootstrap_made() -> None:
    env = {k: v for k, v in os.environ.items() if k != hotpath.ENV}
    build, *files = _probe(env)
    if _toolchain_missing():
        # The fallback bootstrap announces: no compiler, so the Python sources.
        assert build.startswith("python ("), build
        assert all(f.endswith(".py") for f in files), files
        return
    assert _built(), "the compiled build is missing or stale: run scripts/bootstrap"
    assert build == "compiled", build
    assert all(f.endswith(".so") for f in files), files
    pure, *pure_files = _probe({**env, hotpath.ENV: "1"})
    assert pure == f"python ({hotpath.ENV} is set)"
    assert all(f.endswith(".py") for f in pure_files), pure_files


def test_an_edited_source_never_runs_as_its_stale_compiled_twin(tmp_path: Path) -> None:
    if not _built():
        pytest.fail("no compiled build to check against: run scripts/bootstrap with a C compiler")
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "coder_migrate", copy / "coder_migrate")
    env = {k: v for k, v in os.environ.items() if k != hotpath.ENV}
    assert _probe(env, copy)[0] == "compiled"
    with (copy / "coder_migrate" / "proxy" / "router.py").open("a") as source:
        source.write("\n# edited after the build\n")
    build, *files = _probe(env, copy)
    assert build == "python (sources changed since the build)"
    assert all(f.endswith(".py") for f in files), files  # every module, not only router


def test_the_proxy_tests_pass_with_the_other_build() -> None:
    env = {k: v for k, v in os.environ.items() if k != hotpath.ENV}
    active = _probe(env)[0]
    if active == "compiled":
        env[hotpath.ENV] = "1"
        other = "python"
    else:
        pytest.fail(f"only the Python build is here ({active}): run scripts/bootstrap")
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (*ROOT.glob("tests/unit/test_proxy_*.py"),
                  *ROOT.glob("tests/integration/test_proxy_*.py"))
    )  # fmt: skip
    assert len(files) >= 12, files
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"{other} build: {summary}\n{result.stdout[-6000:]}"
    assert " passed" in summary and "failed" not in summary, summary
