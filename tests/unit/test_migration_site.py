"""The migration for one inventory host (role coder_migration): the module's mapping of the
engine's outcome and errors, and the refusals of ``migrate_site`` made before anything is read.

The engine is replaced in the module tests (``migrate_site`` is recorded, not run); the role's
molecule scenario runs the module against the lab.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coder_migrate.engine.plan import Action, Change, Plan, Wave
from coder_migrate.engine.site import SiteOutcome
from coder_migrate.errors import ConfigError, PlanError
from coder_migrate.kinds import KINDS
from coder_migrate.migrations import site
from tests.helpers import EXAMPLE_INVENTORY, RecordedEngineCall, run_site_module


def _run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    engine: RecordedEngineCall, args: dict[str, Any],
) -> tuple[int, dict[str, Any]]:
    return run_site_module(
        monkeypatch, capsys, "coder_migration", "coder_migrate.migrations.site.migrate_site",
        engine, args,
    )


def test_check_mode_plans_and_reports_the_plan_as_diff(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake = RecordedEngineCall(outcome=SiteOutcome(
        changed=True,
        changes=["update workspace provider us-east on the primary: switch on Networking v2"],
        diff="update workspace provider us-east on the primary: switch on Networking v2\n",
    ))
    code, result = _run(monkeypatch, capsys, fake, {
        "inventory": str(tmp_path), "region": "us-east", "_ansible_check_mode": True,
        "_ansible_diff": True,
    })
    assert code == 0
    assert result["changed"] is True
    assert result["changes"] == fake.outcome.changes  # type: ignore[union-attr]
    assert result["diff"] == {"prepared": fake.outcome.diff}  # type: ignore[union-attr]
    (args, kwargs), = fake.calls
    assert args == (tmp_path, "us-east")
    assert kwargs == {"check": True, "force": False, "lock_wait": 120.0}


def test_a_preflight_failure_is_one_line_and_the_module_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake = RecordedEngineCall(error=PlanError(
        "preflight found 2 problem(s); nothing was changed:\n"
        "us-east: workspace provider 'x' does not exist on the primary\n"
        "us-east: test workspace 'y' of 'z' does not exist on the primary"
    ))
    code, result = _run(monkeypatch, capsys, fake, {"inventory": str(tmp_path),
                                                     "region": "us-east"})
    assert code == 1
    assert result["failed"] is True
    assert result["msg"] == (
        "preflight found 2 problem(s); nothing was changed:; "
        "us-east: workspace provider 'x' does not exist on the primary; "
        "us-east: test workspace 'y' of 'z' does not exist on the primary"
    )
    assert "\n" not in result["msg"]


def test_an_unknown_region_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError) as refused:
        site.migrate_site(EXAMPLE_INVENTORY, "mars", check=True)
    message = str(refused.value)
    assert message.startswith(f"mars: not a region of {EXAMPLE_INVENTORY} (coder_regions: ")
    assert message.endswith("nor its primary (primary)")


def _change(region: str, kind: str = "ProviderNetworkingV2", *,
            action: Action = Action.UPDATE) -> Change:
    cls = KINDS.of(kind)
    assert cls is not None
    return cls(id=f"{region}/{kind}/x", region=region, action=action,
               target=f"{kind} of {region}", reason="test")


def test_the_shared_names_wait_until_no_region_has_steps_left() -> None:
    pending = Plan.build(inventory="inv", operation="v1.20-to-v1.21", waves=[
        Wave(name="regions", regions=("eu-west", "us-east"),
             changes=(_change("us-east", action=Action.KEEP), _change("eu-west"))),
        Wave(name="dns", regions=("primary",), changes=(_change("primary", "DnsRRSet"),)),
    ])
    with pytest.raises(PlanError, match="the shared DNS names wait for the regions; migration "
                                        "steps are left in eu-west: migrate them first"):
        site._shared_only(pending)
    only_dns = Plan.build(inventory="inv", operation="v1.20-to-v1.21", waves=[
        Wave(name="regions", regions=("us-east",),
             changes=(_change("us-east", action=Action.KEEP),)),
        Wave(name="dns", regions=("primary",), changes=(_change("primary", "DnsRRSet"),)),
    ])
    assert site._shared_only(only_dns) is only_dns
