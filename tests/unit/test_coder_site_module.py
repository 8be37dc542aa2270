"""The coder_site Ansible module maps the engine's SiteOutcome and errors to a module result.

The engine itself is replaced here (``converge_site`` is recorded, not run); the roles'
molecule scenarios run the module against the lab.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coder_migrate.engine.site import SiteOutcome
from coder_migrate.errors import LockHeld
from tests.helpers import RecordedEngineCall, run_site_module


def _run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    engine: RecordedEngineCall, args: dict[str, Any],
) -> tuple[int, dict[str, Any]]:
    return run_site_module(
        monkeypatch, capsys, "coder_site", "coder_migrate.engine.site.converge_site", engine, args
    )


def test_a_planned_change_in_check_mode_is_reported_with_its_diff(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    engine = RecordedEngineCall(
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
    engine = RecordedEngineCall(outcome=SiteOutcome(changed=False, changes=[], diff=""))
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
        RecordedEngineCall(error=error),
        {"inventory": str(tmp_path), "site": "us-east"},
    )
    assert code == 1
    assert result["failed"] is True
    assert result["msg"] == str(error)
    assert "changes" not in result


def test_a_missing_site_argument_is_refused_before_the_engine_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    engine = RecordedEngineCall(outcome=SiteOutcome(changed=False, changes=[], diff=""))
    code, result = _run(monkeypatch, capsys, engine, {"inventory": str(tmp_path)})
    assert code == 1
    assert "site" in result["msg"]
    assert engine.calls == []
