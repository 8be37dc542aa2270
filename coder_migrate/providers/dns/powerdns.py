"""PowerDNS Authoritative through its HTTP API (``X-API-Key``), 4.7 and later.

Each rrset change is one ``PATCH .../zones/<zone>`` with changetype ``REPLACE`` or ``DELETE``
(the only two 4.7 has), so it is atomic on its own. What the server supports is read from
``GET .../config``: LUA records (``enable-lua-records``, or the zone's ``ENABLE-LUA-RECORDS``
metadata), EDNS Client Subnet (``edns-subnet-processing``) and GeoIP lookups (the ``geoip``
backend launched with a database). Errors carry the method, the path and the server's error
text, never the API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from coder_migrate.errors import DnsError
from coder_migrate.providers.dns.base import (
    Capabilities,
    DnsAdapter,
    RRSet,
    RRSetChange,
    absolute,
)
from coder_migrate.providers.tls import client_tls

__all__ = ["PowerDnsAdapter"]

_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class PowerDnsAdapter(DnsAdapter):
    provider: ClassVar[str] = "powerdns"

    def __init__(
        self,
        *,
        api_url: str,
        api_key: str,
        zone: str,
        server_id: str = "localhost",
        key_source: str = "the configured API key",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.zone = absolute(zone)
        self.api_url = api_url.rstrip("/")
        self._key_source = key_source
        self._server_path = f"/api/v1/servers/{quote(server_id, safe='')}"
        self._zone_path = f"{self._server_path}/zones/{quote(self.zone + '.', safe='')}"
        self._client = httpx.AsyncClient(
            base_url=self.api_url,
            headers={"X-API-Key": api_key, "Accept": "application/json"},
            timeout=_TIMEOUT,
            transport=transport,
            verify=client_tls(),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = await self._client.request(method, path, json=body)
        except httpx.TimeoutException as error:
            raise DnsError(
                f"PowerDNS API {self.api_url}: {method} {path} timed out"
            ) from error
        except httpx.HTTPError as error:
            raise DnsError(
                f"cannot reach the PowerDNS API at {self.api_url} ({type(error).__name__})"
            ) from error
        if response.status_code in (401, 403):
            raise DnsError(
                f"PowerDNS API {self.api_url} refused the API key from {self._key_source} "
                f"({response.status_code} on {method} {path})"
            )
        if response.status_code >= 400:
            detail = _error_text(response)
            if response.status_code == 404 and path.startswith(self._zone_path):
                raise DnsError(
                    f"PowerDNS at {self.api_url} has no zone {self.zone} "
                    f"(404 on {method} {path}): {detail}"
                )
            raise DnsError(
                f"PowerDNS API {method} {path} failed ({response.status_code}): {detail}"
            )
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as error:
            raise DnsError(
                f"PowerDNS API {method} {path} answered something that is not JSON"
            ) from error

    async def capabilities(self) -> Capabilities:
        config = await self._request("GET", f"{self._server_path}/config")
        settings = {
            str(item.get("name")): str(item.get("value", ""))
            for item in config or ()
            if isinstance(item, dict)
        }
        lua = settings.get("enable-lua-records", "no") in ("yes", "shared")
        if not lua:
            metadata = await self._request(
                "GET", f"{self._zone_path}/metadata/ENABLE-LUA-RECORDS"
            )
            lua = "1" in ((metadata or {}).get("metadata") or [])
        backends = {b.strip().split(":")[0] for b in settings.get("launch", "").split(",")}
        geoip = "geoip" in backends and bool(settings.get("geoip-database-files", "").strip())
        return Capabilities(
            provider=self.provider,
            lua_records=lua,
            client_subnet=settings.get("edns-subnet-processing", "no") == "yes",
            geoip=geoip and lua,
        )

    async def observe(self) -> list[RRSet]:
        zone = await self._request("GET", self._zone_path)
        rrsets: list[RRSet] = []
        for item in (zone or {}).get("rrsets", ()):
            records = [r["content"] for r in item.get("records", ()) if not r.get("disabled")]
            if not records:
                continue  # comments only, or every record disabled: nothing is served
            rrsets.append(
                RRSet(name=item["name"], type=item["type"], ttl=item["ttl"], records=tuple(records))
            )
        return rrsets

    async def apply(self, changes: Sequence[RRSetChange]) -> None:
        if not changes:
            return
        # One PATCH for all: the server applies its rrsets in one transaction, aborted
        # whole on any rrset's error, and refuses one name and type twice
        # (pdns/ws-auth.cc, patchZone).
        await self._request("PATCH", self._zone_path,
                            {"rrsets": [_patch_rrset(change) for change in changes]})


def _patch_rrset(change: RRSetChange) -> dict[str, Any]:
    name, rtype = change.key
    if change.after is None:
        return {"name": name + ".", "type": rtype, "changetype": "DELETE"}
    return {
        "name": name + ".",
        "type": rtype,
        "ttl": change.after.ttl,
        "changetype": "REPLACE",
        "records": [{"content": content, "disabled": False} for content in change.after.records],
    }


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0][:300] if response.text.strip() else "no body"
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])[:300]
    return str(body)[:300]
