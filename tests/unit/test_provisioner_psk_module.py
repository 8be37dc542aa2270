"""The provisioner_psk Ansible module passes ``rotate`` to the engine and maps its outcome; the
engine function refuses a region (the key is rotated from the primary). The rotation itself runs
against the lab in tests/integration/test_provisioners_lab.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coder_migrate.engine.site import SiteOutcome, provisioner_key
from coder_migrate.errors import ConfigError
from tests.helpers import REPO, RecordedEngineCall, copy_inventory, run_site_module


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         engine: RecordedEngineCall, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return run_site_module(monkeypatch, capsys, "provisioner_psk",
                           "coder_migrate.engine.site.provisioner_key", engine, args)


@pytest.mark.parametrize("rotate", [True, False])
def test_rotate_reaches_the_engine_and_the_changes_come_back(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    rotate: bool,
) -> None:
    line = "create Secret coder-provisioner-psk-next in ns coder of lab-primary: a new key"
    engine = RecordedEngineCall(outcome=SiteOutcome(changed=rotate,
                                                    changes=[line] if rotate else []))
    code, result = _run(monkeypatch, capsys, engine,
                        {"inventory": str(tmp_path), "site": "primary", "rotate": rotate})
    assert code == 0
    assert (result["changed"], result["changes"]) == (rotate, [line] if rotate else [])
    assert engine.calls == [((tmp_path, "primary"), {
        "check": False, "force": False, "lock_wait": 120.0, "rotate": rotate})]


def test_the_key_is_rotated_from_the_primary_only(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path, REPO / "inventories" / "lab-v2")
    with pytest.raises(ConfigError, match=r"^eu-west: the provisioners' key is rotated from "):
        provisioner_key(inventory, "eu-west", check=True)
