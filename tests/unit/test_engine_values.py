"""Helm values rendered for each site, per generation, with inventory overrides."""

from __future__ import annotations

from coder_migrate.engine.values import deep_merge, release_values
from coder_migrate.inventory import load_topology
from tests.helpers import EXAMPLE_INVENTORY

TOPOLOGY = load_topology(EXAMPLE_INVENTORY)


def test_v1_satellite_values_follow_the_satellite_docs() -> None:
    eu_west = TOPOLOGY.region("eu-west")
    values = release_values(TOPOLOGY, eu_west)
    assert values["coderd"]["satellite"] == {
        "enable": True,
        # The primary's own name (seed 001): no geo rule answers it.
        "primaryURL": "https://coder-primary.example.com",
        "accessURL": "https://coder-eu-west.example.com",
    }
    assert values["coderd"]["devurlsHost"] == "*.coder-eu-west.example.com"
    assert values["coderd"]["tls"] == {
        "hostSecretName": "coder-satellite-cert",
        "devurlsHostSecretName": "coder-satellite-cert",
    }


def test_primary_values_merge_inventory_overrides() -> None:
    values = release_values(TOPOLOGY, TOPOLOGY.primary)
    assert values["coderd"]["replicas"] == 2
    assert "satellite" not in values["coderd"]


def test_v2_proxy_takes_its_token_from_a_secret_never_a_value() -> None:
    v2 = TOPOLOGY.model_copy(update={"generation": "v2"})
    values = release_values(v2, v2.region("australia-southeast1"))
    env = {item["name"]: item for item in values["coder"]["env"]}
    assert values["coder"]["workspaceProxy"] is True
    assert env["CODER_PROXY_SESSION_TOKEN"] == {
        "name": "CODER_PROXY_SESSION_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "coder-workspace-proxy-token", "key": "token"}},
    }
    assert env["CODER_ACCESS_URL"]["value"] == "https://coder-sydney.example.com"
    assert env["CODER_PRIMARY_ACCESS_URL"]["value"] == "https://coder.example.com"


def test_deep_merge_replaces_leaves_and_lists() -> None:
    assert deep_merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2], "d": 3}}) == {
        "a": {"b": 1, "c": [2], "d": 3}
    }
