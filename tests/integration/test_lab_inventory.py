"""``inventories/lab/`` and ``inventories/lab-rfc2136/`` describe the running lab: their
secret references resolve to the lab's secrets, and their endpoints answer.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from kubernetes import client as kube_client

from coder_migrate.inventory import load_topology
from tests.fixtures.lab import LabHandle, kube_api

pytestmark = pytest.mark.integration

INVENTORIES = Path(__file__).resolve().parents[2] / "inventories"


def test_lab_inventory_reaches_every_lab_service(lab: LabHandle) -> None:
    directory = INVENTORIES / "lab"
    topology = load_topology(directory)
    if lab.endpoints.state_dir != (INVENTORIES.parent / ".lab").resolve():
        pytest.fail("the session lab must use the checkout's .lab/ for inventories/lab to match")
    token = topology.session_token.resolve(directory)
    assert token == lab.coder_token
    me = httpx.get(
        f"{topology.primary.access_url.rstrip('/')}/api/v0/users/me",
        headers={"Session-Token": token},
        timeout=10,
    )
    assert me.status_code == 200, me.text

    assert topology.dns.powerdns is not None
    key = topology.dns.powerdns.api_key.resolve(directory)
    zone = httpx.get(
        f"{topology.dns.powerdns.api_url.rstrip('/')}/api/v1/servers/"
        f"{topology.dns.powerdns.server_id}/zones/{topology.dns.zone.rstrip('.')}.",
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert zone.status_code == 200, zone.text

    for site in (topology.primary, *topology.regions):
        assert site.kubeconfig is not None
        kubeconfig = (directory / site.kubeconfig).resolve()
        with kube_api(kubeconfig, site.kube_context) as api:
            nodes = kube_client.CoreV1Api(api).list_node().items
        # One kwok node per zone of the lab (coder_zones spreads across them).
        assert sorted(
            (node.metadata.name, node.metadata.labels["topology.kubernetes.io/zone"])
            for node in nodes if node.metadata
        ) == [("kwok-node-0", "zone-a"), ("kwok-node-1", "zone-b"), ("kwok-node-2", "zone-c")]


def test_rfc2136_inventory_names_the_lab_tsig_key(lab: LabHandle) -> None:
    directory = INVENTORIES / "lab-rfc2136"
    topology = load_topology(directory)
    settings = topology.dns.rfc2136
    assert settings is not None
    assert settings.tsig_secret.resolve(directory) == lab.tsig_secret
    assert settings.tsig_key_name.rstrip(".") == lab.endpoints.tsig_key_name.rstrip(".")
    assert settings.server == f"{lab.endpoints.bind_dns[0]}:{lab.endpoints.bind_dns[1]}"
