"""The dns_records Ansible module goes through the engine's runner (``converge_dns``: plan,
lock, journal, apply) and maps its outcome to the module's result; the engine is recorded
here, the geodns role's molecule scenario runs it against the lab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coder_migrate.dns.rrset_change import DnsRRSetChange
from coder_migrate.engine.change import Action
from coder_migrate.engine.plan import Plan, Wave
from coder_migrate.engine.site import DnsOutcome
from coder_migrate.errors import LockLost
from coder_migrate.providers.dns.base import RRSet
from tests.helpers import RecordedEngineCall, run_site_module

ZONE = "example.test"


def _plan() -> Plan:
    written = RRSet(name=f"coder-eu-west.{ZONE}", type="A", ttl=60, records=("192.0.2.10",))
    kept = RRSet(name=f"coder-eu-west.{ZONE}", type="TXT", ttl=60, records=('"theirs"',))
    changes = (
        DnsRRSetChange(id=f"eu-west/DnsRRSet/A/{written.name}", region="eu-west",
                       action=Action.CREATE, target=f"A {written.name}", reason="own hostname",
                       after=written),
        DnsRRSetChange(id=f"eu-west/DnsRRSet/TXT/{kept.name}", region="eu-west",
                       action=Action.KEEP, target=f"TXT {kept.name}", reason="not ours",
                       before=kept, after=kept),
    )
    return Plan.build(inventory="inv", operation="dns", notes=["no geo routing"],
                      waves=[Wave(name="dns", regions=("eu-west",), changes=changes)])


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         engine: RecordedEngineCall, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return run_site_module(monkeypatch, capsys, "dns_records",
                           "coder_migrate.engine.site.converge_dns", engine, args)


def test_applied_records_are_changed_with_their_zone_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plan = _plan()
    applied = [c.id for c in plan.effective_changes]
    verified = "every region answers as planned (3 answers, 0.4 s)"
    engine = RecordedEngineCall(outcome=DnsOutcome(plan=plan, zone=ZONE, provider="powerdns",
                                                   applied=applied, verified=verified))
    code, result = _run(monkeypatch, capsys, engine,
                        {"inventory": str(tmp_path), "lock_wait": 5, "_ansible_diff": True})
    assert code == 0 and result["changed"] is True
    assert result["applied"] == applied and result["zone"] == ZONE
    assert [c["action"] for c in result["changes"]] == ["create"]
    assert result["kept"] == [{"target": f"TXT coder-eu-west.{ZONE}", "reason": "not ours"}]
    assert result["diff"][0]["after"] == f"coder-eu-west.{ZONE}. 60 A 192.0.2.10\n"
    assert result["verified"] == verified
    assert engine.calls == [((tmp_path,), {"check": False, "force": False, "lock_wait": 5.0,
                                           "verify_timeout": 60.0})]


def test_verify_false_applies_without_the_verify_step(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    engine = RecordedEngineCall(outcome=DnsOutcome(plan=_plan(), zone=ZONE,
                                                   provider="powerdns", applied=[]))
    code, _ = _run(monkeypatch, capsys, engine,
                   {"inventory": str(tmp_path), "verify": False, "verify_timeout": 5})
    assert code == 0 and engine.calls[0][1]["verify_timeout"] is None


def test_check_mode_plans_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    engine = RecordedEngineCall(outcome=DnsOutcome(plan=_plan(), zone=ZONE,
                                                   provider="powerdns", applied=[]))
    code, result = _run(monkeypatch, capsys, engine,
                        {"inventory": str(tmp_path), "_ansible_check_mode": True})
    assert code == 0 and result["changed"] is True and result["applied"] == []
    assert engine.calls[0][1]["check"] is True


def test_a_lost_lock_fails_with_its_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    error = LockLost("wave 'dns' stopped: lock lost to bob@ci:7 (Lease coder/coder-migrate-lock)")
    code, result = _run(monkeypatch, capsys, RecordedEngineCall(error=error),
                        {"inventory": str(tmp_path)})
    assert code == 1 and result["msg"] == str(error)
