"""Random and mutated inventories: only InventoryError comes out, never a traceback."""

from __future__ import annotations

import contextlib
import copy
import os
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coder_migrate.errors import InventoryError
from coder_migrate.inventory import Topology, read_inventory_json, topology_from_inventory_json
from tests.helpers import EXAMPLE_INVENTORY

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(
    max_size=30
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@cache
def _example_json() -> dict[str, Any]:
    return read_inventory_json(EXAMPLE_INVENTORY)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_paths(child, (*prefix, index)))
    return found


@st.composite
def mutated_inventories(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(_example_json())
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["coder_x", "coder_geo", "vars", "hosts", "extra"]))] = (
                draw(json_values)
            )
        else:
            parent[path[-1]] = draw(json_values)
    return data


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutated_inventories())
def test_mutated_inventories_give_only_inventory_errors(data: dict[str, Any]) -> None:
    try:
        topology = topology_from_inventory_json(data, EXAMPLE_INVENTORY)
    except InventoryError as error:
        assert error.problems
        for problem in error.problems:
            assert "\n" not in str(problem)
    else:
        assert isinstance(topology, Topology)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_arbitrary_json_gives_only_inventory_errors(data: Any) -> None:
    with contextlib.suppress(InventoryError):
        topology_from_inventory_json(
            data if isinstance(data, dict) else {"all": data}, EXAMPLE_INVENTORY
        )


def test_example_keeps_inventory_order_and_canary() -> None:
    topology = topology_from_inventory_json(_example_json(), EXAMPLE_INVENTORY)
    assert [r.name for r in topology.regions] == [
        "us-east", "us-west", "eu-west", "ap-southeast", "australia-southeast1",
    ]
    assert topology.canary is not None and topology.canary.name == "us-east"
    assert topology.region("australia-southeast1").dns_name == "coder-sydney.example.com"


def test_control_characters_in_keys_still_give_one_line_per_problem() -> None:
    data = copy.deepcopy(_example_json())
    data["_meta"]["hostvars"]["eu-west"]["coder_\nnamespace"] = "x"
    try:
        topology_from_inventory_json(data, EXAMPLE_INVENTORY)
    except InventoryError as error:
        assert [str(p) for p in error.problems] == [str(error)]
        assert "coder_\\nnamespace: expected a known coder-migrate setting" in str(error)
    else:
        raise AssertionError("an unknown key must be refused")
