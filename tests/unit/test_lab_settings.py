"""Lab settings: region names, fixed ports and the offset that moves them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from coder_migrate.errors import PortBusy
from coder_migrate.inventory import load_topology
from coder_migrate.lab.process import ProcessRef, ref_for, require_free_ports, start_ticks
from coder_migrate.lab.settings import LabSettings, region_names

REPO = Path(__file__).resolve().parents[2]


def test_default_lab_is_a_primary_and_three_named_regions() -> None:
    settings = LabSettings.create()
    assert [c.context for c in settings.clusters] == [
        "lab-primary",
        "lab-us-east",
        "lab-eu-west",
        "lab-ap-southeast",
    ]


def test_regions_beyond_three_get_generated_names() -> None:
    assert region_names(5) == ["us-east", "eu-west", "ap-southeast", "region-4", "region-5"]
    assert region_names(1) == ["us-east"]


@pytest.mark.parametrize("regions", [0, 3, 20])
def test_fixed_ports_never_collide(regions: int) -> None:
    ports = list(LabSettings.create(regions=regions).fixed_ports().values())
    assert len(ports) == len(set(ports))


def test_port_offset_moves_every_port_and_two_labs_do_not_overlap() -> None:
    first = LabSettings.create().fixed_ports()
    second = LabSettings.create(port_offset=1000).fixed_ports()
    assert {name: port + 1000 for name, port in first.items()} == second
    assert not set(first.values()) & set(second.values())


def test_busy_port_error_names_the_port_and_the_way_out() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(PortBusy) as error:
            require_free_ports({"PowerDNS API": port})
    assert str(error.value).startswith(f"port 127.0.0.1:{port} (PowerDNS API) is already in use")
    assert "--port-offset" in str(error.value)


def test_process_ref_does_not_match_a_recycled_pid() -> None:
    import os

    ref = ref_for("self", os.getpid())
    assert ref is not None and ref.alive()
    ticks = start_ticks(os.getpid())
    assert ticks is not None
    recycled = ProcessRef(name="self", pid=os.getpid(), start_ticks=ticks + 1)
    assert not recycled.alive()


@pytest.mark.parametrize("inventory", ["lab", "lab-rfc2136"])
def test_lab_inventories_match_what_lab_up_serves(inventory: str) -> None:
    settings = LabSettings.create()
    topology = load_topology(REPO / "inventories" / inventory)
    assert topology.primary.access_url.rstrip("/") == f"http://127.0.0.1:{settings.coderd_port}"
    contexts = {c.name: c.context for c in settings.clusters}
    assert topology.primary.kube_context == contexts["primary"]
    assert {r.name: r.kube_context for r in topology.regions} == {
        name: context for name, context in contexts.items() if name != "primary"
    }
    assert topology.dns.zone.rstrip(".") == "lab.coder-migrate.test"
    if topology.dns.provider == "powerdns":
        assert topology.dns.powerdns is not None
        assert topology.dns.powerdns.api_url.rstrip("/") == (
            f"http://127.0.0.1:{settings.powerdns_api_port}"
        )
        assert topology.dns.powerdns.nameservers == (f"127.0.0.1:{settings.powerdns_dns_port}",)
    else:
        assert topology.dns.rfc2136 is not None
        assert topology.dns.rfc2136.server == f"127.0.0.1:{settings.bind_dns_port}"
