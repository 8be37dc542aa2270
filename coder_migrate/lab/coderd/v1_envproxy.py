"""The envproxy side of a Coder v1 workspace provider (1.20 and 1.21; ASSUMED contract).

A provider's envproxy (the coder/workspace-provider chart's ``envproxy run``) holds the token
``coder providers create`` printed (``envproxy.token`` → ``CEMANAGER_TOKEN``, V1 §4, §7).
How envproxy talks to the primary is not documented; the emulator gives it what the bundled
proxy's envproxy mode needs, in the shape of the satellite contract (docs/coder-emulator.md):
the address of a workspace *on its own provider*, for the token in ``Envproxy-Token``.
Networking v2 does not change it: the old release stays deployed for rollback (seed 002).
"""

from __future__ import annotations

import secrets

from aiohttp import web

from coder_migrate.lab.coderd.core import ApiError, Emulator, token_hash
from coder_migrate.lab.coderd.store import Doc
from coder_migrate.providers.coder.v1 import ENVPROXY_TOKEN_HEADER

__all__ = ["V1Envproxy"]


class V1Envproxy:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/private/envproxy/workspaces", self.find_workspace)
        r.add_get("/api/private/envproxy/workspaces/{id}", self.workspace)

    def _provider_for(self, request: web.Request) -> Doc:
        token = request.headers.get(ENVPROXY_TOKEN_HEADER, "")
        digest = token_hash(token) if token else ""
        for provider in self.emu.store.all("provider"):
            stored = provider.get("envproxy_token_hash", "")
            if stored and secrets.compare_digest(stored, digest):
                return provider
        raise ApiError(401, "request does not carry a workspace provider's envproxy token")

    def _answer(self, provider: Doc, workspace: Doc | None) -> web.Response:
        # Another provider's workspace is as unknown to this envproxy as a missing one.
        if workspace is None or workspace["resource_pool_id"] != provider["id"]:
            raise ApiError(404, "workspace not found")
        return web.json_response(self.emu.agent_address(workspace, workspace["agents"][0]))

    async def workspace(self, request: web.Request) -> web.Response:
        provider = self._provider_for(request)
        return self._answer(provider, self.emu.store.get("workspace", request.match_info["id"]))

    async def find_workspace(self, request: web.Request) -> web.Response:
        provider = self._provider_for(request)
        owner = self.emu.user_by_name_or_id(request.query.get("owner", ""))
        workspace = self.emu.find_workspace(owner, request.query.get("name", "")) if owner else None
        return self._answer(provider, workspace)
