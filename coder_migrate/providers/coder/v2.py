"""Async clients for a Coder v2 primary (reference: coder-v2-workspace-proxies.md).

``CoderV2Client`` is the operator's view (``Coder-Session-Token``): build info and the
workspace proxy lifecycle. ``CoderV2ProxyClient`` is a proxy's own view
(``Coder-External-Proxy-Token``): register, crypto keys, app tokens, agent addresses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from coder_migrate import sensitive
from coder_migrate.errors import CoderAPIError, CoderNotFound
from coder_migrate.providers.coder.models_v2 import (
    AgentAddress,
    BuildInfo,
    CreatedProxy,
    CryptoKey,
    ProvisionerDaemon,
    ProxyRegistration,
    ProxyStatus,
    Region,
    V2User,
    WorkspaceProxy,
)
from coder_migrate.providers.coder.transport import (
    CoderTransport,
    RetryPolicy,
    TransportClient,
    parse_list,
    parse_model,
)

__all__ = [
    "PROXY_TOKEN_HEADER",
    "SESSION_TOKEN_HEADER",
    "CoderV2Client",
    "CoderV2ProxyClient",
    "signed_token_from",
]

SESSION_TOKEN_HEADER = "Coder-Session-Token"  # noqa: S105 - a header name
PROXY_TOKEN_HEADER = "Coder-External-Proxy-Token"  # noqa: S105 - a header name


class CoderV2Client(TransportClient):
    """A Coder v2 primary, authenticated with a user session token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = CoderTransport(
            base_url,
            auth_headers={SESSION_TOKEN_HEADER: token},
            error_style="v2",
            timeout=timeout,
            retry=retry,
            transport=transport,
        )

    async def __aenter__(self) -> CoderV2Client:
        return self

    async def buildinfo(self) -> BuildInfo:
        path = "/api/v2/buildinfo"
        return parse_model(BuildInfo, await self._http.json("GET", path), "GET", path)

    async def me(self) -> V2User:
        path = "/api/v2/users/me"
        return parse_model(V2User, await self._http.json("GET", path), "GET", path)

    async def list_proxies(self) -> list[WorkspaceProxy]:
        """Every proxy that is not deleted; the primary comes first."""
        path = "/api/v2/workspaceproxies"
        body = await self._http.json("GET", path)
        regions = body.get("regions") if isinstance(body, dict) else None
        return parse_list(WorkspaceProxy, regions, "GET", path)

    async def provisioner_daemons(self) -> list[ProvisionerDaemon]:
        """The external provisioner daemons the primary knows, with when each was last seen."""
        path = "/api/v2/provisionerdaemons"
        return parse_list(ProvisionerDaemon, await self._http.json("GET", path), "GET", path)

    async def get_proxy(self, name_or_id: str) -> WorkspaceProxy:
        path = f"/api/v2/workspaceproxies/{name_or_id}"
        return parse_model(WorkspaceProxy, await self._http.json("GET", path), "GET", path)

    async def find_proxy(self, name: str) -> WorkspaceProxy | None:
        """The live proxy with this name, or ``None``."""
        try:
            return await self.get_proxy(name)
        except CoderNotFound:
            return None

    async def create_proxy(
        self, name: str, *, display_name: str = "", icon: str = ""
    ) -> CreatedProxy:
        """Create a proxy; the returned token is shown only this once."""
        path = "/api/v2/workspaceproxies"
        body = await self._http.json(
            "POST", path, json_body={"name": name, "display_name": display_name, "icon": icon}
        )
        return _registered(parse_model(CreatedProxy, body, "POST", path))

    async def update_proxy(
        self,
        name_or_id: str,
        *,
        name: str | None = None,
        display_name: str | None = None,
        icon: str | None = None,
        regenerate_token: bool = False,
    ) -> CreatedProxy:
        """PATCH a proxy; unchanged fields are sent as they are now: the real server wants
        ``id``, ``name``, ``display_name`` and ``icon``, none of them empty (400 otherwise).

        ``proxy_token`` in the result is empty unless ``regenerate_token`` was set.
        """
        current = await self.get_proxy(name_or_id)
        path = f"/api/v2/workspaceproxies/{current.id}"
        body = await self._http.json(
            "PATCH",
            path,
            json_body={
                "id": current.id,
                "name": current.name if name is None else name,
                "display_name": current.display_name if display_name is None else display_name,
                "icon": current.icon_url if icon is None else icon,
                "regenerate_token": regenerate_token,
            },
        )
        return _registered(parse_model(CreatedProxy, body, "PATCH", path))

    async def regenerate_proxy_token(
        self, name_or_id: str, *, display_name: str | None = None, icon: str | None = None
    ) -> CreatedProxy:
        """A new token for the proxy (the old one stops working); the PATCH carries the display
        name and icon too, as the real server requires them."""
        return await self.update_proxy(
            name_or_id, display_name=display_name, icon=icon, regenerate_token=True
        )

    async def delete_proxy(self, name_or_id: str) -> None:
        """Soft-delete a proxy."""
        await self._http.request("DELETE", f"/api/v2/workspaceproxies/{name_or_id}")

    async def list_regions(self) -> list[Region]:
        path = "/api/v2/regions"
        body = await self._http.json("GET", path)
        regions = body.get("regions") if isinstance(body, dict) else None
        return parse_list(Region, regions, "GET", path)

    async def proxy_status(self, name_or_id: str) -> ProxyStatus:
        """The last health check of a proxy (status and report)."""
        return (await self.get_proxy(name_or_id)).status


class CoderV2ProxyClient(TransportClient):
    """A workspace proxy talking to its primary with ``Coder-External-Proxy-Token``."""

    def __init__(
        self,
        base_url: str,
        proxy_token: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = CoderTransport(
            base_url,
            auth_headers={PROXY_TOKEN_HEADER: proxy_token},
            error_style="v2",
            timeout=timeout,
            retry=retry,
            transport=transport,
        )

    async def __aenter__(self) -> CoderV2ProxyClient:
        return self

    async def register(self, registration: Mapping[str, Any]) -> ProxyRegistration:
        """``me/register`` with the documented request fields (access_url, replica_id, ...)."""
        path = "/api/v2/workspaceproxies/me/register"
        body = await self._http.json("POST", path, json_body=dict(registration))
        return parse_model(ProxyRegistration, body, "POST", path)

    async def deregister(self, replica_id: str) -> None:
        await self._http.request(
            "POST", "/api/v2/workspaceproxies/me/deregister", json_body={"replica_id": replica_id}
        )

    async def crypto_keys(self, feature: str = "workspace_apps_token") -> list[CryptoKey]:
        path = "/api/v2/workspaceproxies/me/crypto-keys"
        body = await self._http.json("GET", path, params={"feature": feature})
        keys = body.get("crypto_keys") if isinstance(body, dict) else None
        return parse_list(CryptoKey, keys, "GET", path)

    async def issue_signed_app_token(self, payload: Mapping[str, Any]) -> httpx.Response:
        """Ask for a signed app token; the raw answer (201 JSON, 303, HTML error) is returned
        so the proxy can copy a non-201 answer to the browser as Coder does."""
        return await self._http.request(
            "POST",
            "/api/v2/workspaceproxies/me/issue-signed-app-token",
            json_body=dict(payload),
            headers={"Accept": "text/html"},
            expected=tuple(range(300, 600)),
        )

    async def report_app_stats(self, stats: list[Mapping[str, Any]]) -> None:
        await self._http.request(
            "POST",
            "/api/v2/workspaceproxies/me/app-stats",
            json_body={"stats": [dict(s) for s in stats]},
        )

    async def agent_address(self, agent_id: str) -> AgentAddress:
        """Where an agent is reachable (ASSUMED contract, docs/coder-emulator.md)."""
        path = f"/api/v2/workspaceproxies/me/agents/{agent_id}"
        return parse_model(AgentAddress, await self._http.json("GET", path), "GET", path)

    async def find_agent_address(self, owner: str, workspace: str, agent: str = "") -> AgentAddress:
        path = "/api/v2/workspaceproxies/me/agents"
        params = {"owner": owner, "workspace": workspace}
        if agent:
            params["agent"] = agent
        body = await self._http.json("GET", path, params=params)
        return parse_model(AgentAddress, body, "GET", path)


def _registered(created: CreatedProxy) -> CreatedProxy:
    """A proxy token is scrubbed from all output from the moment it arrives."""
    token = created.proxy_token.get_secret_value()
    if token:
        sensitive.register(token)
    return created


def signed_token_from(response: httpx.Response) -> str:
    """The ``signed_token_str`` of a 201 issue-signed-app-token answer."""
    if response.status_code != 201:
        raise CoderAPIError(
            "no signed app token was issued",
            method="POST",
            path="/api/v2/workspaceproxies/me/issue-signed-app-token",
            status=response.status_code,
        )
    token = response.json().get("signed_token_str", "")
    return str(token)
