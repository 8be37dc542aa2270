"""The shipped v2 inventories: seed 003's layout (``inventories/example-v2``) and what
``lab up --coder v2`` serves (``inventories/lab-v2``)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from coder_migrate.inventory import load_topology
from coder_migrate.inventory.model import Topology
from coder_migrate.lab.settings import POWERDNS_API_PORT, POWERDNS_DNS_PORT, LabSettings
from tests.helpers import REPO

INVENTORIES = REPO / "inventories"


@pytest.fixture(scope="module", params=["example-v2", "lab-v2"])
def topology(request: pytest.FixtureRequest) -> Topology:
    return load_topology(INVENTORIES / str(request.param))


def test_workspace_proxies_on_their_own_names_and_nothing_geo_routed(topology: Topology) -> None:
    """Seed 003: the primary's access URL is the name everyone opens (no geo rule), each proxy
    has a hostname and a wildcard of its own."""
    assert topology.generation == "v2"
    assert not topology.geo_routed
    assert topology.primary.dns_name == topology.dns.shared_hostname
    names = [region.dns_name for region in topology.regions]
    assert len(set(names)) == len(names) and topology.dns.shared_hostname not in names
    for region in topology.regions:
        assert region.wildcard_host == f"*.{region.dns_name}"


def test_lab_v2_matches_what_lab_up_serves() -> None:
    topology = load_topology(INVENTORIES / "lab-v2")
    lab = LabSettings.create(coder_mode="v2")
    assert topology.primary.access_url == f"http://127.0.0.1:{lab.coderd_port}"
    assert [region.name for region in topology.regions] == list(lab.regions)
    assert [region.kube_context for region in (topology.primary, *topology.regions)] == [
        cluster.context for cluster in lab.clusters
    ]
    powerdns = topology.dns.powerdns
    assert powerdns is not None
    assert powerdns.api_url == f"http://127.0.0.1:{POWERDNS_API_PORT}"
    assert list(powerdns.nameservers) == [f"127.0.0.1:{POWERDNS_DNS_PORT}"]
    # The lab plays each proxy pod on its access URL, which must be loopback and its own.
    hosts = [urlsplit(region.access_url).hostname or "" for region in topology.regions]
    assert all(host.startswith("127.") for host in hosts) and len(set(hosts)) == len(hosts)
    assert [list(region.dns_targets) for region in topology.regions] == [[h] for h in hosts]
