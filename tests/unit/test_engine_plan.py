"""The plan object: checksum, stale-plan refusal, --force for destructive changes."""

from __future__ import annotations

import pytest

from coder_migrate.engine.kinds.release import HelmReleaseChange, ReleaseDoc
from coder_migrate.engine.plan import Action, Change, Plan, Wave
from coder_migrate.errors import StalePlan, UnsafePlan
from coder_migrate.kinds import KINDS


def _change(region: str, action: Action = Action.CREATE, *, force: bool = False) -> Change:
    return HelmReleaseChange(
        id=f"{region}/HelmRelease/coder", region=region, action=action,
        target=f"helm release coder in {region}", reason="not installed", needs_force=force,
        after=ReleaseDoc(chart="coder-1.21.0", values={"coderd": {"satellite": {"enable": True}}}),
    )


def _plan(*changes: Change) -> Plan:
    return Plan.build(
        inventory="inventories/lab",
        waves=[Wave(name="canary", regions=("eu-west",), changes=changes)],
    )


def test_checksum_is_stable_and_covers_content() -> None:
    first, second = _plan(_change("eu-west")), _plan(_change("eu-west"))
    assert first.checksum == second.checksum
    assert len(first.checksum) == 64
    assert _plan(_change("us-east")).checksum != first.checksum


def test_round_trip_through_json() -> None:
    plan = _plan(_change("eu-west"))
    again = Plan.from_json(plan.to_json(), kinds=KINDS)
    assert again == plan
    assert isinstance(next(again.changes), HelmReleaseChange)
    assert again.to_json() == plan.to_json() and again.checksum == plan.checksum


def test_edited_plan_file_is_refused() -> None:
    text = _plan(_change("eu-west")).to_json().replace("not installed", "installed")
    with pytest.raises(StalePlan, match="checksum does not match"):
        Plan.from_json(text, kinds=KINDS, source="plan.json")


def test_garbage_plan_file_is_refused() -> None:
    with pytest.raises(StalePlan, match=r"plan\.json: not a coder-migrate plan"):
        Plan.from_json("{}", kinds=KINDS, source="plan.json")


def test_stale_plan_is_refused() -> None:
    saved = _plan(_change("eu-west"))
    fresh = _plan(_change("eu-west"), _change("us-east"))
    with pytest.raises(StalePlan, match=r"plan\.json is stale"):
        saved.ensure_matches(fresh, source="plan.json")
    saved.ensure_matches(_plan(_change("eu-west")))


def test_destructive_changes_need_force_and_are_all_listed() -> None:
    plan = _plan(_change("eu-west", Action.DELETE, force=True),
                 _change("us-east", Action.DELETE, force=True))
    with pytest.raises(UnsafePlan) as caught:
        plan.raise_if_unsafe(force=False)
    assert "2 change(s) need --force" in str(caught.value)
    assert "eu-west" in str(caught.value) and "us-east" in str(caught.value)
    plan.raise_if_unsafe(force=True)


def test_keep_changes_do_not_make_a_plan_non_empty() -> None:
    assert _plan(_change("eu-west", Action.KEEP)).is_empty
    assert not _plan(_change("eu-west")).is_empty
    assert Plan.build(inventory="x", waves=[Wave(name="w", regions=(), changes=())]).waves == ()
