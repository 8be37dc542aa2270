"""Adapter edges that a real server rarely produces on demand: error shapes, bad secrets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from coder_migrate.errors import DnsError
from coder_migrate.providers.dns import (
    PowerDnsAdapter,
    Rfc2136Adapter,
    RRSet,
    RRSetChange,
    ZoneFileAdapter,
)
from coder_migrate.providers.dns.zonefile import render_zone

API_KEY = "secret-api-key-0123456789abcdef0123456789abcdef"


def _adapter(handler: Any) -> PowerDnsAdapter:
    return PowerDnsAdapter(
        api_url="http://127.0.0.1:1", api_key=API_KEY, zone="example.com",
        key_source="env PDNS_API_KEY", transport=httpx.MockTransport(handler),
    )


def _run(adapter: PowerDnsAdapter, action: str) -> Any:
    async def run() -> Any:
        async with adapter:
            if action == "observe":
                return await adapter.observe()
            if action == "capabilities":
                return await adapter.capabilities()
            rrset = RRSet(name="a.example.com", type="A", ttl=60, records=("192.0.2.1",))
            return await adapter.apply([RRSetChange(before=None, after=rrset)])

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, "Unauthorized", "refused the API key from env PDNS_API_KEY \\(401"),
        (404, {"error": "Could not find domain"}, "has no zone example.com \\(404"),
        (422, {"error": "RRset a.example.com. IN A: Conflicts with CNAME"}, "Conflicts with CNAME"),
        (500, "boom", "failed \\(500\\): boom"),
    ],
)
def test_http_errors_become_one_line_dns_errors_without_the_key(
    status: int, body: Any, expected: str
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(body, dict):
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=body)

    with pytest.raises(DnsError, match=expected) as caught:
        _run(_adapter(handler), "apply")
    assert API_KEY not in str(caught.value)
    assert seen[0].headers["X-API-Key"] == API_KEY
    assert seen[0].method == "PATCH"


def test_unreachable_api_is_a_dns_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(DnsError, match=r"cannot reach the PowerDNS API at http://127\.0\.0\.1:1"):
        _run(_adapter(handler), "observe")


def test_patch_uses_only_the_changetypes_powerdns_4_7_knows() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(204)

    async def run() -> None:
        rrset = RRSet(name="a.example.com", type="A", ttl=60, records=("192.0.2.1",))
        async with _adapter(handler) as adapter:
            await adapter.apply([RRSetChange(before=None, after=rrset)])
            await adapter.apply([RRSetChange(before=rrset, after=None)])

    asyncio.run(run())
    assert [b["rrsets"][0]["changetype"] for b in bodies] == ["REPLACE", "DELETE"]
    assert bodies[0]["rrsets"][0]["name"] == "a.example.com."
    assert all(len(b["rrsets"]) == 1 for b in bodies)


def test_capabilities_follow_the_server_config() -> None:
    config = [
        {"name": "enable-lua-records", "type": "ConfigSetting", "value": "no"},
        {"name": "launch", "type": "ConfigSetting", "value": "gsqlite3,geoip"},
        {"name": "geoip-database-files", "type": "ConfigSetting", "value": "mmdb:/x.mmdb"},
        {"name": "edns-subnet-processing", "type": "ConfigSetting", "value": "yes"},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/config"):
            return httpx.Response(200, json=config)
        return httpx.Response(200, json={"kind": "ENABLE-LUA-RECORDS", "metadata": ["1"]})

    capabilities = _run(_adapter(handler), "capabilities")
    assert capabilities.lua_records and capabilities.geoip and capabilities.client_subnet


def test_tsig_secret_that_is_not_base64_names_the_key_not_the_secret() -> None:
    with pytest.raises(DnsError, match="TSIG key k1: the secret is not valid base64") as caught:
        Rfc2136Adapter(
            server="127.0.0.1:53", zone="example.com", tsig_key_name="k1",
            tsig_secret="not*base64*at*all", tsig_algorithm="hmac-sha256",
        )
    assert "not*base64" not in str(caught.value)


def test_zone_rendering_is_deterministic_and_groups_by_host(tmp_path: Path) -> None:
    rrsets = [
        RRSet(name="coder-b.example.com", type="A", ttl=60, records=("192.0.2.2",)),
        RRSet(name="coder.example.com", type="A", ttl=60, records=("192.0.2.9", "192.0.2.1")),
        RRSet(name="*.coder-b.example.com", type="A", ttl=60, records=("192.0.2.2",)),
    ]
    text = render_zone("example.com", "coder.example.com", rrsets)
    assert text == render_zone("example.com", "coder.example.com", list(reversed(rrsets)))
    assert text.index("; coder.example.com: every developer") < text.index("; coder-b.example.com")

    async def roundtrip() -> list[RRSet]:
        adapter = ZoneFileAdapter(
            path=tmp_path / "z.zone", zone="example.com", shared_hostname="coder.example.com"
        )
        await adapter.apply([RRSetChange(before=None, after=r) for r in rrsets])
        return await adapter.observe()

    assert sorted(asyncio.run(roundtrip()), key=lambda r: r.key) == sorted(
        rrsets, key=lambda r: r.key
    )
