"""Helm values rendered for each site, per generation, with inventory overrides."""

from __future__ import annotations

import pytest

from coder_migrate.engine.values import deep_merge, release_values
from coder_migrate.errors import PlanError
from coder_migrate.inventory import Region, Topology, load_topology
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


def _v2_region_with(values: dict[str, object]) -> tuple[Topology, Region]:
    v2 = TOPOLOGY.model_copy(update={"generation": "v2"})
    region = v2.region("eu-west").model_copy(update={"values": values})
    return v2, region


def test_coder_values_env_is_merged_by_name_and_keeps_every_toolkit_entry() -> None:
    """Adding one variable through coder_values adds it; the proxy token, the primary URL and
    the access URLs the toolkit renders stay (a whole-list replace used to drop them)."""
    v2, region = _v2_region_with({"coder": {"env": [{"name": "CODER_VERBOSE", "value": "true"}]}})
    plain = release_values(v2, v2.region("eu-west"))
    values = release_values(v2, region)
    env = values["coder"]["env"]
    assert env[: len(plain["coder"]["env"])] == plain["coder"]["env"]
    assert env[-1] == {"name": "CODER_VERBOSE", "value": "true"}
    assert [e["name"] for e in env] == [
        "CODER_PRIMARY_ACCESS_URL",
        "CODER_PROXY_SESSION_TOKEN",
        "CODER_ACCESS_URL",
        "CODER_WILDCARD_ACCESS_URL",
        "CODER_VERBOSE",
    ]


def test_named_lists_merge_by_name_unnamed_lists_are_replaced() -> None:
    base = {
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "envFrom": [{"secretRef": {"name": "s"}}],
        "volumes": [{"name": "v", "emptyDir": {}}],
        "secretNames": ["a"],
    }
    override = {
        "env": [{"name": "B", "value": "changed"}, {"name": "C", "value": "3"}],
        "envFrom": [{"secretRef": {"name": "s"}, "prefix": "X_"}, {"configMapRef": {"name": "c"}}],
        "volumes": [{"name": "v", "secret": {"secretName": "x"}}],
        "secretNames": ["b"],
    }
    assert deep_merge(base, override) == {
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "changed"},
                {"name": "C", "value": "3"}],
        "envFrom": [{"secretRef": {"name": "s"}},
                    {"secretRef": {"name": "s"}, "prefix": "X_"},
                    {"configMapRef": {"name": "c"}}],
        "volumes": [{"name": "v", "secret": {"secretName": "x"}}],
        "secretNames": ["b"],
    }


@pytest.mark.parametrize(
    ("values", "where", "source"),
    [
        ({"coder": {"env": [{"name": "CODER_PROXY_SESSION_TOKEN", "value": "x"}]}},
         "coder.env CODER_PROXY_SESSION_TOKEN", "the proxy token Secret coder-migrate writes"),
        ({"coder": {"env": [{"name": "CODER_ACCESS_URL", "value": "https://other"}]}},
         "coder.env CODER_ACCESS_URL", "coder_access_url"),
        ({"coderd": {"satellite": {"accessURL": "https://other"}}},
         "coderd.satellite.accessURL", "coder_access_url"),
    ],
)
def test_coder_values_replacing_an_owned_value_is_one_line(
    values: dict[str, object], where: str, source: str
) -> None:
    v2, region = _v2_region_with(values)
    with pytest.raises(PlanError) as raised:
        release_values(v2, region)
    message = str(raised.value)
    assert "\n" not in message
    assert message == (
        f"{TOPOLOGY.source}: eu-west: coder_values: {where} is set by coder-migrate from "
        f"{source}; change that instead (or remove it from coder_values)"
    )
