"""The lab's DNS servers: PowerDNS answers LUA records per client subnet (ECS), BIND takes
TSIG-signed RFC 2136 updates and refuses unsigned ones.
"""

from __future__ import annotations

import uuid

import dns.edns
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsigkeyring
import dns.update
import httpx
import pytest

from tests.fixtures.lab import LabHandle

pytestmark = pytest.mark.integration


def _query_a(server: tuple[str, int], name: str, client_subnet: str | None = None) -> list[str]:
    options: list[dns.edns.Option] = []
    if client_subnet is not None:
        address, prefix = client_subnet.split("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    query = dns.message.make_query(name, dns.rdatatype.A, use_edns=0, options=options)
    response = dns.query.udp(query, server[0], port=server[1], timeout=3)
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())
    return sorted(item.address for rrset in response.answer for item in rrset)


def test_powerdns_lua_record_answers_per_client_subnet(lab: LabHandle) -> None:
    endpoints = lab.endpoints
    zone = endpoints.zone
    name = f"geo-{uuid.uuid4().hex[:8]}.{zone}"
    lua = (
        "A \";if netmask({'198.51.100.0/24'}) then return '127.0.1.1' "
        "elseif netmask({'203.0.113.0/24'}) then return '127.0.1.2' "
        "else return '127.0.0.1' end\""
    )
    api = f"{endpoints.powerdns_api_url}/api/v1/servers/{endpoints.powerdns_server_id}"
    headers = {"X-API-Key": lab.pdns_api_key}
    rrset = {
        "name": name,
        "type": "LUA",
        "ttl": 30,
        "changetype": "REPLACE",
        "records": [{"content": lua, "disabled": False}],
    }
    response = httpx.patch(f"{api}/zones/{zone}", headers=headers, json={"rrsets": [rrset]})
    assert response.status_code == 204, response.text
    try:
        assert _query_a(endpoints.powerdns_dns, name, "198.51.100.1/32") == ["127.0.1.1"]
        assert _query_a(endpoints.powerdns_dns, name, "203.0.113.7/32") == ["127.0.1.2"]
        # Without ECS the answer depends on the resolver's own address (loopback here).
        assert _query_a(endpoints.powerdns_dns, name) == ["127.0.0.1"]
    finally:
        rrset = {"name": name, "type": "LUA", "changetype": "DELETE"}
        httpx.patch(f"{api}/zones/{zone}", headers=headers, json={"rrsets": [rrset]})


def test_powerdns_api_refuses_a_wrong_key(lab: LabHandle) -> None:
    endpoints = lab.endpoints
    api = f"{endpoints.powerdns_api_url}/api/v1/servers/{endpoints.powerdns_server_id}/zones"
    assert httpx.get(api, headers={"X-API-Key": "not-the-key"}).status_code == 401
    zones = httpx.get(api, headers={"X-API-Key": lab.pdns_api_key}).json()
    assert endpoints.zone in {zone["name"] for zone in zones}


def test_bind_applies_tsig_signed_update_and_refuses_unsigned(lab: LabHandle) -> None:
    endpoints = lab.endpoints
    host, port = endpoints.bind_dns
    zone = endpoints.zone
    signed_name = f"signed-{uuid.uuid4().hex[:8]}.{zone}"
    unsigned_name = f"unsigned-{uuid.uuid4().hex[:8]}.{zone}"
    key_name = dns.name.from_text(endpoints.tsig_key_name)
    keyring = dns.tsigkeyring.from_text({endpoints.tsig_key_name: lab.tsig_secret})

    update = dns.update.UpdateMessage(
        zone,
        keyring=keyring,
        keyname=key_name,
        keyalgorithm=endpoints.tsig_algorithm,
    )
    update.replace(signed_name, 30, "A", "127.0.2.1")
    response = dns.query.tcp(update, host, port=port, timeout=5)
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())
    assert _query_a(endpoints.bind_dns, signed_name) == ["127.0.2.1"]

    unsigned = dns.update.UpdateMessage(zone)
    unsigned.replace(unsigned_name, 30, "A", "127.0.2.2")
    refused = dns.query.tcp(unsigned, host, port=port, timeout=5)
    assert refused.rcode() == dns.rcode.REFUSED
    query = dns.message.make_query(unsigned_name, dns.rdatatype.A)
    answer = dns.query.udp(query, host, port=port, timeout=3)
    assert answer.rcode() == dns.rcode.NXDOMAIN

    cleanup = dns.update.UpdateMessage(
        zone,
        keyring=keyring,
        keyname=key_name,
        keyalgorithm=endpoints.tsig_algorithm,
    )
    cleanup.delete(signed_name)
    dns.query.tcp(cleanup, host, port=port, timeout=5)
