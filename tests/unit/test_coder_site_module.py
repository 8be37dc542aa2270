"""The coder_site Ansible module maps the engine's SiteOutcome and errors to a module result.

The engine itself is replaced here (``converge_site`` is recorded, not run); the roles'
molecule scenarios run the module against the lab.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.testing import patch_module_args

from coder_migrate.engine.site import SiteOutcome
from coder_migrate.errors import LockHeld
from tests.helpers import load_collection_module


@dataclass
class FakeEngine:
    outcome: SiteOutcome | None = None
    error: Exception | None = None
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def converge_site(self, *args: Any, **kwargs: Any) -> SiteOutcome:
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome


def _run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    engine: FakeEngine,
    args: dict[str, Any],
) -> tuple[int, dict[str, Any]]:
    fake_site = types.ModuleType("coder_migrate.engine.site")
    fake_site.converge_site = engine.converge_site  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "coder_migrate.engine.site", fake_site)
    module = load_collection_module("coder_site", monkeypatch)
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        module.main()
    return int(exited.value.code or 0), json.loads(capsys.readouterr().out)


def test_a_planned_change_in_check_mode_is_reported_with_its_diff(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    engine = FakeEngine(
        outcome=SiteOutcome(
            changed=True,
            changes=["create helm release coder-satellite in ns coder-satellite: not installed"],
            diff="+ coderd.satellite.enable: true\n+ token: (sensitive)\n",
        )
    )
    code, result = _run(
        monkeypatch,
        capsys,
        engine,
        {
            "inventory": str(tmp_path),
            "site": "eu-west",
            "_ansible_check_mode": True,
            "_ansible_diff": True,
        },
    )
    assert code == 0
    assert result["changed"] is True
    assert result["changes"] == [
        "create helm release coder-satellite in ns coder-satellite: not installed"
    ]
    assert result["diff"] == {"prepared": "+ coderd.satellite.enable: true\n+ token: (sensitive)\n"}
    assert engine.calls == [
        ((tmp_path, "eu-west"), {"check": True, "force": False, "lock_wait": 120.0})
    ]


def test_an_empty_plan_is_unchanged_and_has_no_diff_unless_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    engine = FakeEngine(outcome=SiteOutcome(changed=False, changes=[], diff=""))
    code, result = _run(
        monkeypatch,
        capsys,
        engine,
        {"inventory": str(tmp_path), "site": "primary", "force": True, "lock_wait": 5},
    )
    assert code == 0
    assert result["changed"] is False
    assert result["changes"] == []
    assert "diff" not in result
    assert engine.calls == [
        ((tmp_path, "primary"), {"check": False, "force": True, "lock_wait": 5.0})
    ]


def test_an_engine_error_fails_with_its_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    error = LockHeld("the apply lock coder-migrate in ns coder is held by ci-42 since 10:02")
    code, result = _run(
        monkeypatch,
        capsys,
        FakeEngine(error=error),
        {"inventory": str(tmp_path), "site": "us-east"},
    )
    assert code == 1
    assert result["failed"] is True
    assert result["msg"] == str(error)
    assert "changes" not in result


def test_a_missing_site_argument_is_refused_before_the_engine_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    engine = FakeEngine(outcome=SiteOutcome(changed=False, changes=[], diff=""))
    code, result = _run(monkeypatch, capsys, engine, {"inventory": str(tmp_path)})
    assert code == 1
    assert "site" in result["msg"]
    assert engine.calls == []
