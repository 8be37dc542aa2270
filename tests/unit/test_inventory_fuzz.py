"""Random and mutated inventories, host names, URLs, versions and group layouts: only
InventoryError comes out, never a traceback, and what comes out prints."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from coder_migrate.cli.inventory import _table as show_table
from coder_migrate.cli.inventory import shown
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


# -- host names, URLs, versions and group layouts -------------------------------------------

host_names = st.text(min_size=1, max_size=20) | st.sampled_from(
    ["EU_West", "eu-west", "eu west", "éu-west", "-eu", "eu-", "a" * 64, "primary", "all",
     "localhost", "1", "eu.west"]
)
hosts_in_urls = st.text(max_size=24) | st.sampled_from(
    ["coder_eu.example.com", "cöder.example.com", "xn--cder-jua.example.com", "[fd00:ac::11]",
     "[fd00:ac::11", "127.0.0.1", "999.1.1.1", "coder-us-east.example.com", "", "[/]", ":"]
)
urls = st.builds(
    "{}://{}{}{}".format,
    st.sampled_from(["http", "https", "ftp", "", "HTTP"]),
    hosts_in_urls,
    st.sampled_from(["", ":0", ":443", ":65536", ":x", ":", ":8443"]),
    st.sampled_from(["", "/", "/coder", "?q", "#f", "/[/]"]),
) | st.text(max_size=40)
versions = st.text(max_size=12) | st.from_regex(r"\A[0-9]{1,2}\.[0-9]{1,2}(\.[0-9]{1,2})?\Z") | (
    st.sampled_from(["1.19.0", "1.20.4", "1.21.0", "1.21.3-rc.1", "2.24.0", "3.0.0", "1.21"])
)


def _with_host_renamed(data: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    renamed = json.loads(json.dumps(data).replace(json.dumps(old), json.dumps(new)))
    return dict(renamed)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["primary", "eu-west", "us-east"]), host_names)
def test_any_host_name_gives_only_inventory_errors(old: str, new: str) -> None:
    _only_inventory_errors(_with_host_renamed(_example_json(), old, new))


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["primary", "eu-west", "australia-southeast1"]), urls,
       st.sampled_from(["coder_access_url", "coder_wildcard_host", "coder_hostname"]))
def test_any_url_gives_only_inventory_errors(host: str, url: str, key: str) -> None:
    data = copy.deepcopy(_example_json())
    data["_meta"]["hostvars"][host][key] = url
    topology = _only_inventory_errors(data)
    if topology is not None:
        _render(topology)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(versions, st.sampled_from(["v1", "v2"]))
def test_any_version_gives_only_inventory_errors(version: str, generation: str) -> None:
    data = copy.deepcopy(_example_json())
    for variables in data["_meta"]["hostvars"].values():
        variables["coder_version"] = version
        variables["coder_generation"] = generation
    topology = _only_inventory_errors(data)
    if topology is not None:
        assert version.startswith("1.21." if generation == "v1" else "2.")


group_names = st.sampled_from(
    ["coder_primary", "coder_regions", "coder_region", "coder_proxy_hosts", "coder_regions_eu",
     "regions", "all", "ungrouped", "coder_", "Coder_Regions"]
)


@st.composite
def group_layouts(draw: st.DrawFn) -> dict[str, Any]:
    """The example's hosts and variables in random groups, children (cycles included)."""
    data = copy.deepcopy(_example_json())
    hosts = list(data["_meta"]["hostvars"])
    layout: dict[str, Any] = {"_meta": data["_meta"]}
    for group in draw(st.lists(group_names, max_size=6, unique=True)):
        layout[group] = {
            "hosts": draw(st.lists(st.sampled_from(hosts), max_size=7)),
            "children": draw(st.lists(group_names, max_size=3)),
        }
    return layout


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(group_layouts())
def test_any_group_layout_gives_only_inventory_errors(data: dict[str, Any]) -> None:
    topology = _only_inventory_errors(data)
    if topology is not None:
        assert topology.regions
        _render(topology)


def _only_inventory_errors(data: dict[str, Any]) -> Topology | None:
    """The topology, or None after checking the problems print as one line each, as the CLI
    prints them (never read as markup)."""
    try:
        return topology_from_inventory_json(data, EXAMPLE_INVENTORY)
    except InventoryError as error:
        assert error.problems
        console = Console(file=io.StringIO(), width=100)
        for problem in error.problems:
            assert "\n" not in str(problem)
            console.print(Text(str(problem)))
        return None


def _render(topology: Topology) -> None:
    Console(file=io.StringIO(), width=100).print(show_table(topology))
    json.dumps(shown(topology))
