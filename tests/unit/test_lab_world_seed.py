"""The lab's world (coder_migrate/lab/world.yml) is what both the lab inventories name and
the Coder emulator seeds: the test workspace `apply --migration` looks for on the primary
exists there, with that owner, on that region's provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from coder_migrate.errors import ConfigError
from coder_migrate.inventory import load_topology
from coder_migrate.lab.coderd.config import EmulatorConfig
from coder_migrate.lab.settings import LabSettings
from coder_migrate.lab.world import WORLD_FILE, lab_world

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("inventory", ["lab", "lab-rfc2136"])
def test_the_lab_inventory_reads_the_world_file_itself(inventory: str) -> None:
    assert (REPO / "inventories" / inventory / "world.yml").resolve() == WORLD_FILE.resolve()


@pytest.mark.parametrize("inventory", ["lab", "lab-rfc2136"])
def test_the_emulator_seeds_what_the_lab_inventory_names(inventory: str) -> None:
    topology = load_topology(REPO / "inventories" / inventory)
    seed = EmulatorConfig(regions=list(LabSettings.create().regions))
    assert seed.providers is not None and seed.workspaces is not None
    users = {u.username for u in seed.users}
    providers = {p.name for p in seed.providers}
    workspaces = {w.name: w for w in seed.workspaces}
    assert topology.primary.namespace == lab_world().primary.namespace
    assert topology.primary.release == lab_world().primary.release
    for region in topology.regions:
        assert region.test_workspace is not None, region.name
        named = [p.name for p in region.workspace_providers]
        assert named and set(named) <= providers, region.name
        seeded = workspaces[region.test_workspace.name]
        assert seeded.owner == region.test_workspace.owner
        assert seeded.owner in users
        assert seeded.provider in named, region.name
    # Nothing seeded that no region names: the lab's world is the inventory's, no more.
    assert providers == {p.name for r in topology.regions for p in r.workspace_providers}


def test_a_region_beyond_the_world_gets_a_provider_and_test_workspace_of_its_name() -> None:
    seed = EmulatorConfig(regions=["us-east", "region-4"])
    assert seed.workspaces is not None
    assert [(w.name, w.provider) for w in seed.workspaces] == [
        ("migration-check-us-east", "us-east"), ("migration-check-region-4", "region-4"),
    ]


def test_a_broken_world_file_is_one_line_naming_file_and_key(tmp_path: Path) -> None:
    broken = tmp_path / "world.yml"
    text = WORLD_FILE.read_text(encoding="utf-8").replace("owner: platform-bot", "owner: [x]", 1)
    broken.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        lab_world(broken)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{broken}: regions.us-east.coder_test_workspace.owner:")


def test_a_problem_with_a_world_key_names_the_world_file() -> None:
    from coder_migrate.inventory.loader import read_inventory_json
    from coder_migrate.inventory.sources import SourceMap

    inventory = REPO / "inventories" / "lab"
    sources = SourceMap(inventory, read_inventory_json(inventory))
    assert sources.file_for("eu-west", "coder_test_workspace.owner").endswith("lab/world.yml")
    assert sources.file_for("eu-west", "coder_geo").endswith("host_vars/eu-west.yml")


def test_a_test_copy_of_the_lab_inventory_keeps_the_world_in_host_vars(tmp_path: Path) -> None:
    """tests.helpers.lab_inventory moves world.yml's keys into host_vars, where the tests
    edit them; Ansible reads the same inventory."""
    from tests.helpers import lab_inventory

    copy = lab_inventory(tmp_path, tag="w1", address_block=50)
    assert not (copy / "world.yml").exists()
    topology = load_topology(copy)
    original = load_topology(REPO / "inventories" / "lab")
    assert [(r.name, r.test_workspace, r.workspace_providers) for r in topology.regions] == [
        (r.name, r.test_workspace, r.workspace_providers) for r in original.regions
    ]
    assert topology.primary.namespace == "coder-w1"  # the helper's own edit still wins
