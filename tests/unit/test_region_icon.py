"""A workspace proxy's icon: ``coder_region_icon``, else the flag of the region's first country.

Real Coder refuses a proxy PATCH with an empty icon (codersdk PatchWorkspaceProxy: ``icon``
is ``validate:"required"``), so every region has one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coder_migrate.errors import InventoryError
from coder_migrate.inventory import load_topology
from tests.helpers import EXAMPLE_INVENTORY, copy_inventory, edit_yaml

TOPOLOGY = load_topology(EXAMPLE_INVENTORY)


@pytest.mark.parametrize(
    ("region", "icon"),
    [
        ("us-east", "/emojis/1f1fa-1f1f8.png"),  # US: regional indicators U, S
        ("eu-west", "/emojis/1f1ee-1f1ea.png"),  # IE, the first of its countries
        ("australia-southeast1", "/emojis/1f1e6-1f1fa.png"),  # AU
    ],
)
def test_default_icon_is_the_flag_of_the_first_country(region: str, icon: str) -> None:
    assert TOPOLOGY.region(region).icon == icon


def test_a_region_without_countries_gets_a_globe_and_the_inventory_key_wins() -> None:
    region = TOPOLOGY.region("eu-west")
    geo = region.geo.model_copy(update={"countries": ()})
    no_countries = region.model_copy(update={"geo": geo})
    assert no_countries.icon == "/emojis/1f310.png"
    chosen = region.model_copy(update={"region_icon": "/icon/k8s.png"})
    assert chosen.icon == "/icon/k8s.png"


def test_coder_region_icon_is_read_from_the_inventory_and_checked(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    region_file = inventory / "host_vars" / "eu-west.yml"
    edit_yaml(region_file, lambda data: data.update(coder_region_icon="/emojis/1f3f0.png"))
    assert load_topology(inventory).region("eu-west").icon == "/emojis/1f3f0.png"
    edit_yaml(region_file, lambda data: data.update(coder_region_icon="castle"))
    with pytest.raises(InventoryError) as raised:
        load_topology(inventory)
    message = str(raised.value)
    assert "eu-west.yml: eu-west: coder_region_icon:" in message and "'castle'" in message
    assert len(message.splitlines()) == 1
