"""Async client for a Coder v1 (Classic) 1.20/1.21 primary (reference: coder-v1-api.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from coder_migrate.errors import (
    CoderAPIError,
    CoderAuthError,
    CoderNotFound,
    CoderUnavailable,
    CoderUnsupported,
)
from coder_migrate.poll import attempts
from coder_migrate.providers.coder.models_v1 import (
    BuildEvent,
    CoderVersion,
    KubernetesProvider,
    Organization,
    Satellite,
    SatelliteKey,
    V1User,
    Workspace,
)
from coder_migrate.providers.coder.models_v2 import AgentAddress
from coder_migrate.providers.coder.satellite_key import sign_satellite_request
from coder_migrate.providers.coder.transport import (
    CoderTransport,
    RetryPolicy,
    TransportClient,
    parse_list,
    parse_model,
    path_of,
)

__all__ = [
    "ENVPROXY_TOKEN_HEADER",
    "SATELLITE_MIN_VERSION",
    "CoderV1Client",
    "CoderV1EnvproxyClient",
    "CoderV1SatelliteClient",
]

log = logging.getLogger("coder_migrate.providers.coder")

#: Satellites and per-provider Networking v2 exist from this version on (reference §3, §4).
SATELLITE_MIN_VERSION = (1, 21)
_SATELLITE_KEY_PATH = "/api/private/satellites/key"
#: How an envproxy shows the primary its provider's token (ASSUMED, docs/coder-emulator.md).
ENVPROXY_TOKEN_HEADER = "Envproxy-Token"  # noqa: S105 - a header name
# The websockets library logs handshake headers (the session token) at DEBUG: keep it quiet.
_quiet_ws_logger = logging.getLogger("coder_migrate.providers.coder.websocket")
_quiet_ws_logger.disabled = True
_quiet_ws_logger.propagate = False

#: The UpdateWorkspaceReq fields; all null means "rebuild as is" (reference §5).
_REBUILD_BODY: dict[str, None] = {
    "image_id": None,
    "image_tag": None,
    "cpu_cores": None,
    "memory_gb": None,
    "disk_gb": None,
    "gpus": None,
    "template_id": None,
}


class CoderV1Client(TransportClient):
    """A Coder v1 primary, authenticated with a ``Session-Token``."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self._token = token
        self._http = CoderTransport(
            base_url,
            auth_headers={"Session-Token": token},
            error_style="v1",
            timeout=timeout,
            retry=retry,
            transport=transport,
        )
        self.poll_interval = poll_interval
        self._version: CoderVersion | None = None

    # -- version -----------------------------------------------------------------------------

    async def version(self, *, refresh: bool = False) -> CoderVersion:
        """The primary's version from the ``coder-version`` header of ``GET /api``."""
        if self._version is None or refresh:
            response = await self._http.request("GET", "/api")
            self._version = CoderVersion.parse(response.headers.get("coder-version"))
        return self._version

    async def _require_1_21(self, method: str, path: str, what: str) -> None:
        version = await self.version()
        if not version.at_least(*SATELLITE_MIN_VERSION):
            raise CoderUnsupported(
                f"{what} needs Coder 1.21 or newer, but the primary runs {version.raw}: "
                "upgrade the primary to 1.21 first",
                method=method,
                path=path,
            )

    # -- users and orgs ----------------------------------------------------------------------

    async def me(self) -> V1User:
        path = "/api/v0/users/me"
        return parse_model(V1User, await self._http.json("GET", path), "GET", path)

    async def list_orgs(self) -> list[Organization]:
        path = "/api/v0/orgs"
        return parse_list(Organization, await self._http.json("GET", path), "GET", path)

    async def list_users(self) -> list[V1User]:
        path = "/api/v0/users"
        return parse_list(V1User, await self._http.json("GET", path), "GET", path)

    async def find_user(self, username_or_email: str) -> V1User | None:
        """The user with this username or email, or ``None``."""
        return next(
            (u for u in await self.list_users() if username_or_email in (u.username, u.email)),
            None,
        )

    # -- satellites (1.21+) ------------------------------------------------------------------

    async def list_satellites(self) -> list[Satellite]:
        """Every registered satellite; an empty list is not an error."""
        path = "/api/private/satellites"
        await self._require_1_21("GET", path, "listing satellites")
        body = await self._http.json("GET", path)
        data = body.get("data") if isinstance(body, dict) else None
        return parse_list(Satellite, data if data is not None else [], "GET", path)

    async def find_satellite(self, name: str) -> Satellite | None:
        return next((s for s in await self.list_satellites() if s.name == name), None)

    async def create_satellite(self, name: str, public_key: str) -> Satellite:
        path = "/api/private/satellites"
        await self._require_1_21("POST", path, "registering a satellite")
        body = await self._http.json(
            "POST", path, json_body={"name": name, "public_key": public_key}
        )
        data = body.get("data") if isinstance(body, dict) else None
        return parse_model(Satellite, data, "POST", path)

    async def delete_satellite(self, satellite_id: str) -> None:
        path = f"/api/private/satellites/{satellite_id}"
        await self._require_1_21("DELETE", path, "deleting a satellite")
        await self._http.request("DELETE", path)

    async def fetch_satellite_key(
        self, satellite_access_url: str, *, retry: RetryPolicy | None = None
    ) -> SatelliteKey:
        """The satellite's public key: its access URL with the path replaced, no auth;
        ``retry`` overrides the client's retries (a caller that polls asks once)."""
        parts = urlsplit(satellite_access_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CoderAPIError(
                "satellite access URL must be an http(s) URL with a host",
                method="GET",
                path=_SATELLITE_KEY_PATH,
            )
        url = urlunsplit((parts.scheme, parts.netloc, _SATELLITE_KEY_PATH, "", ""))
        body = await self._http.json("GET", _SATELLITE_KEY_PATH, url=url, authenticate=False,
                                     retry=retry)
        key = parse_model(SatelliteKey, body, "GET", _SATELLITE_KEY_PATH)
        if not key.key or not key.fingerprint:
            raise CoderAPIError(
                "the satellite answered with an empty key or fingerprint",
                method="GET",
                path=_SATELLITE_KEY_PATH,
            )
        return key

    # -- workspace providers -----------------------------------------------------------------

    async def list_providers(self) -> list[KubernetesProvider]:
        path = "/api/private/resource-pools"
        body = await self._http.json("GET", path)
        data = body.get("kubernetes") if isinstance(body, dict) else None
        return parse_list(KubernetesProvider, data if data is not None else [], "GET", path)

    async def get_provider(self, provider_id: str) -> KubernetesProvider:
        path = f"/api/private/resource-pools/{provider_id}"
        return parse_model(KubernetesProvider, await self._http.json("GET", path), "GET", path)

    async def set_networking_v2(self, provider_id: str, enabled: bool) -> KubernetesProvider:
        """Turn Networking v2 on or off for a provider (ASSUMED call, docs/coder-emulator.md)."""
        path = f"/api/private/resource-pools/{provider_id}"
        await self._require_1_21("PATCH", path, "switching Networking v2")
        if (await self.version()).at_least(1, 22):
            # 1.22 made Networking v2 the default and removed the option (reference §4).
            if enabled:
                return await self.get_provider(provider_id)
            raise CoderUnsupported(
                "Networking v2 cannot be turned off from Coder 1.22 on (it is the default)",
                method="PATCH",
                path=path,
            )
        await self._http.request("PATCH", path, json_body={"enable_net_v2": enabled})
        provider = await self.get_provider(provider_id)
        if provider.enable_net_v2 is not enabled:
            raise CoderAPIError(
                f"the primary did not apply enable_net_v2={str(enabled).lower()}",
                method="PATCH",
                path=path,
            )
        return provider

    async def provider_workspaces(self, provider_id: str) -> list[Workspace]:
        path = f"/api/private/resource-pools/{provider_id}/workspaces"
        return parse_list(Workspace, await self._http.json("GET", path), "GET", path)

    # -- workspaces --------------------------------------------------------------------------

    async def list_workspaces(
        self, *, org_id: str | None = None, user_id: str | None = None
    ) -> list[Workspace]:
        path = "/api/v0/workspaces"
        params = {k: v for k, v in (("orgs", org_id), ("users", user_id)) if v}
        body = await self._http.json("GET", path, params=params)
        return parse_list(Workspace, body, "GET", path)

    async def find_workspace(self, name: str, *, owner: str) -> Workspace | None:
        """The workspace ``name`` of user ``owner`` (username or email), or ``None``."""
        user = await self.find_user(owner)
        if user is None:
            return None
        workspaces = await self.list_workspaces(user_id=user.id)
        return next((w for w in workspaces if w.name == name), None)

    async def get_workspace(self, workspace_id: str) -> Workspace:
        path = f"/api/v0/workspaces/{workspace_id}"
        return parse_model(Workspace, await self._http.json("GET", path), "GET", path)

    async def rebuild_workspace(self, workspace_id: str) -> None:
        """Start a rebuild: ``PATCH`` with every UpdateWorkspaceReq field null."""
        await self._http.request(
            "PATCH", f"/api/v0/workspaces/{workspace_id}", json_body=_REBUILD_BODY
        )

    async def watch_build(self, workspace_id: str) -> AsyncIterator[BuildEvent]:
        """Build events from the ``watch-update`` websocket, until ``done`` or ``error``."""
        path = f"/api/private/workspaces/{workspace_id}/watch-update"
        parts = urlsplit(self._http.url(path))
        uri = urlunsplit(
            ("wss" if parts.scheme == "https" else "ws", parts.netloc, parts.path, "", "")
        )
        try:
            async with connect(
                uri,
                additional_headers={"Session-Token": self._token},
                open_timeout=self._http.timeout,
                logger=_quiet_ws_logger,
                proxy=None,
            ) as socket:
                async for message in socket:
                    try:
                        event = BuildEvent.model_validate(json.loads(message))
                    except (ValidationError, ValueError) as error:
                        raise CoderAPIError(
                            "unexpected build event shape", method="GET", path=path
                        ) from error
                    yield event
                    if event.type in ("done", "error"):
                        return
        except InvalidStatus as error:
            status = error.response.status_code
            error_class: type[CoderAPIError] = {
                401: CoderAuthError,
                403: CoderAuthError,
                404: CoderNotFound,
            }.get(status, CoderUnavailable if status >= 500 else CoderAPIError)
            raise error_class(
                "the primary refused the watch-update websocket",
                method="GET",
                path=path,
                status=status,
            ) from error
        except (WebSocketException, OSError, TimeoutError) as error:
            raise CoderUnavailable(
                f"watch-update websocket failed ({type(error).__name__})", method="GET", path=path
            ) from error

    async def wait_for_build(self, workspace_id: str, *, timeout: float = 600.0) -> Workspace:
        """Wait until the current build is ``done`` (then return the workspace) or fails.

        Follows ``watch-update``; when the websocket cannot be used it polls
        ``latest_stat.container_status`` until ``ON`` (done) or ``FAILED``.
        """
        path = f"/api/private/workspaces/{workspace_id}/watch-update"
        deadline = time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                async for event in self.watch_build(workspace_id):
                    if event.type == "done":
                        return await self.get_workspace(workspace_id)
                    if event.type == "error":
                        raise CoderAPIError(
                            f"workspace build failed: {event.msg or 'no message'}",
                            method="GET",
                            path=path,
                        )
        except TimeoutError as error:
            raise CoderAPIError(
                f"workspace build did not finish within {timeout:g}s", method="GET", path=path
            ) from error
        except (CoderUnavailable, CoderNotFound) as error:
            # No usable websocket (older primary, proxy in between, 5xx): poll instead.
            log.warning("watch-update unavailable (%s); polling the workspace instead", error)
        return await self._poll_build(workspace_id, deadline, timeout)

    async def _poll_build(self, workspace_id: str, deadline: float, timeout: float) -> Workspace:
        path = f"/api/v0/workspaces/{workspace_id}"
        async for attempt in attempts(deadline - time.monotonic(), interval=self.poll_interval):
            workspace = await self.get_workspace(workspace_id)
            status = workspace.latest_stat.container_status
            if not workspace.updating and status == "ON":
                return workspace
            if status == "FAILED":
                raise CoderAPIError(
                    "workspace build failed: container_status is FAILED", method="GET", path=path
                )
            if attempt.last:
                break
        raise CoderAPIError(
            f"workspace build did not finish within {timeout:g}s", method="GET", path=path
        )


class _WorkspaceAddresses(TransportClient):
    """Where a workspace's agent is, as a proxy in front of workspaces asks the primary
    (ASSUMED, docs/coder-emulator.md): under *prefix*, authenticated by :meth:`_headers`."""

    _prefix = ""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = CoderTransport(
            base_url,
            auth_headers={},
            error_style="v1",
            timeout=timeout,
            retry=retry,
            transport=transport,
        )

    def _headers(self, path: str) -> dict[str, str]:
        raise NotImplementedError

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return await self._http.json("GET", path, params=params, headers=self._headers(path))

    async def workspace_address(self, workspace_id: str) -> AgentAddress:
        path = f"{self._prefix}/{workspace_id}"
        return parse_model(AgentAddress, await self._get(path), "GET", path)

    async def find_workspace_address(self, owner: str, name: str) -> AgentAddress:
        path = self._prefix
        body = await self._get(path, {"owner": owner, "name": name})
        return parse_model(AgentAddress, body, "GET", path)


class CoderV1SatelliteClient(_WorkspaceAddresses):
    """What a registered satellite asks the primary, signed with its private key (ASSUMED)."""

    _prefix = "/api/private/satellites/me/workspaces"

    def __init__(self, base_url: str, private_key_pem: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._private_key_pem = private_key_pem

    def _headers(self, path: str) -> dict[str, str]:
        return dict(sign_satellite_request(self._private_key_pem, "GET", path_of(path)))


class CoderV1EnvproxyClient(_WorkspaceAddresses):
    """What a workspace provider's envproxy asks the primary, with the provider's envproxy
    token (``envproxy.token``; ASSUMED): the address of a workspace on that provider."""

    _prefix = "/api/private/envproxy/workspaces"

    def __init__(self, base_url: str, envproxy_token: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._envproxy_token = envproxy_token

    def _headers(self, path: str) -> dict[str, str]:
        return {ENVPROXY_TOKEN_HEADER: self._envproxy_token}
