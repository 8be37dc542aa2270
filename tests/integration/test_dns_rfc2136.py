"""GeoDNS records on a real BIND 9 through RFC 2136 updates signed with TSIG."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from coder_migrate.dns import apply_dns_changes, plan_dns, restore_dns_changes
from coder_migrate.dns.plan import DnsPlan
from coder_migrate.engine.plan import Action
from coder_migrate.errors import DnsError
from coder_migrate.inventory.model import Topology
from coder_migrate.providers.dns import Rfc2136Adapter, RRSet, RRSetChange, adapter_for
from tests.fixtures.dns import (
    LAB_ZONE,
    PRIMARY_TARGET,
    REGIONS,
    BindServer,
    ecs_answer,
    lab_topology_data,
)

pytestmark = pytest.mark.integration

SHARED = f"coder.{LAB_ZONE}"


def _topology(server: BindServer, monkeypatch: pytest.MonkeyPatch, edit: Any = None) -> Topology:
    monkeypatch.setenv("LAB_TSIG_SECRET", server.secret)
    data = lab_topology_data(
        {
            "provider": "rfc2136",
            "rfc2136": {
                "server": server.nameserver,
                "tsig_key_name": server.key_name,
                "tsig_algorithm": server.algorithm,
                "tsig_secret": {"env": "LAB_TSIG_SECRET"},
            },
        },
        health_port=8080,
    )
    if edit is not None:
        edit(data)
    return Topology.model_validate(data)


def _adapter(server: BindServer, secret: str | None = None) -> Rfc2136Adapter:
    return Rfc2136Adapter(
        server=server.nameserver, zone=LAB_ZONE, tsig_key_name=server.key_name,
        tsig_secret=secret or server.secret, tsig_algorithm=server.algorithm,
    )


def _observe(server: BindServer) -> dict[tuple[str, str], RRSet]:
    async def run() -> dict[tuple[str, str], RRSet]:
        async with _adapter(server) as adapter:
            return {r.key: r for r in await adapter.observe()}

    return asyncio.run(run())


def _plan_and_apply(topology: Topology) -> DnsPlan:
    async def run() -> DnsPlan:
        async with adapter_for(topology.dns) as adapter:
            plan = await plan_dns(topology, adapter)
            await apply_dns_changes(adapter, plan.changes)
            return plan

    return asyncio.run(run())


def test_apply_three_regions_and_say_geo_is_unavailable(
    bind_server: BindServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan_and_apply(_topology(bind_server, monkeypatch))

    assert any("geo routing is not available on provider rfc2136" in n for n in plan.notes)
    every = sorted([PRIMARY_TARGET, *(spec["target"] for spec in REGIONS.values())])
    for spec in REGIONS.values():
        # No geo on BIND: every client gets every deployment.
        assert ecs_answer(bind_server.nameserver, SHARED, spec["test"]) == every
    for name, spec in REGIONS.items():
        host = f"coder-{name}.{LAB_ZONE}"
        assert ecs_answer(bind_server.nameserver, host, "192.0.2.1/32") == [spec["target"]]
        assert ecs_answer(bind_server.nameserver, f"app.{host}", "192.0.2.1/32") == [
            spec["target"]
        ]
    zone = _observe(bind_server)
    assert zone[(f"_coder-migrate-a.{SHARED}", "TXT")].records == (
        f'"heritage=coder-migrate,owner={SHARED},rrset=A {SHARED}"',
    )


def test_reapply_is_empty_and_foreign_records_stay(
    bind_server: BindServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = _topology(bind_server, monkeypatch)
    foreign = RRSet(name=f"www.{LAB_ZONE}", type="A", ttl=300, records=("127.0.50.1",))
    taken = RRSet(name=f"coder-us-east.{LAB_ZONE}", type="A", ttl=300, records=("127.0.50.2",))

    async def seed() -> None:
        async with _adapter(bind_server) as adapter:
            for rrset in (foreign, taken):
                await adapter.apply([RRSetChange(before=None, after=rrset)])

    asyncio.run(seed())
    plan = _plan_and_apply(topology)
    kept = {c.target for c in plan.changes if c.action is Action.KEEP}
    assert f"A coder-us-east.{LAB_ZONE}" in kept
    zone = _observe(bind_server)
    assert zone[foreign.key] == foreign and zone[taken.key] == taken

    async def replan() -> DnsPlan:
        async with adapter_for(topology.dns) as adapter:
            return await plan_dns(topology, adapter)

    again = asyncio.run(replan())
    assert again.is_empty, [c.summary() for c in again.effective]


def test_rollback_restores_the_zone_exactly(
    bind_server: BindServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = _topology(bind_server, monkeypatch)
    found = _observe(bind_server)

    async def deploy_and_roll_back() -> None:
        async with adapter_for(topology.dns) as adapter:
            plan = await plan_dns(topology, adapter)
            await apply_dns_changes(adapter, plan.changes)
            await restore_dns_changes(adapter, plan.changes)

    asyncio.run(deploy_and_roll_back())
    current = _observe(bind_server)
    for state in (current, found):
        state.pop((LAB_ZONE, "SOA"))  # BIND moves the serial with every update
    assert current == found


def test_wrong_tsig_secret_is_a_clear_error_and_changes_nothing(
    bind_server: BindServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _observe(bind_server)
    wrong = base64.b64encode(b"w" * 32).decode()
    topology = _topology(bind_server, monkeypatch)

    async def run() -> None:
        async with _adapter(bind_server, secret=wrong) as adapter:
            plan = await plan_dns(topology, adapter)
            await apply_dns_changes(adapter, plan.changes)

    with pytest.raises(DnsError) as caught:
        asyncio.run(run())
    message = str(caught.value)
    assert f"TSIG key {bind_server.key_name}" in message
    assert wrong not in message and bind_server.secret not in message
    assert _observe(bind_server) == before


def test_server_refuses_a_change_when_the_rrset_moved_since_the_plan(
    bind_server: BindServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = RRSet(name=f"coder-eu-west.{LAB_ZONE}", type="A", ttl=60, records=("127.0.1.1",))
    other = RRSet(name=f"coder-eu-west.{LAB_ZONE}", type="A", ttl=60, records=("127.0.50.9",))

    async def run() -> None:
        async with _adapter(bind_server) as adapter:
            await adapter.apply([RRSetChange(before=None, after=other)])
            # The plan believed the rrset absent: the server's prerequisite refuses it.
            await adapter.apply([RRSetChange(before=None, after=stale)])

    with pytest.raises(DnsError, match="no longer what the plan saw"):
        asyncio.run(run())
    assert _observe(bind_server)[other.key] == other
