"""Helpers shared by tests: copies of the example inventory with targeted edits."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_INVENTORY = REPO / "inventories" / "example"


def copy_inventory(destination: Path, source: Path = EXAMPLE_INVENTORY) -> Path:
    target = destination / source.name
    shutil.copytree(source, target)
    return target


def edit_yaml(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Load *path*, let *change* mutate the mapping, write it back."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
