"""External provisioner daemons on the v2 emulator: the pre-shared key (PSK) check of the serve
endpoint and the daemons list.

Sources (coder/coder): ``coderd/httpmw/provisionerdaemon.go``
(``ExtractProvisionerDaemonAuthenticated``: no PSK configured → 400 "External provisioner
daemons not enabled"; no ``Coder-Provisioner-PSK`` header → 401 "provisioner daemon auth token
required"; a different key → 401 "provisioner daemon auth token invalid"; one key, compared in
constant time), ``codersdk/provisionerdaemons.go`` (``ServeProvisionerDaemon`` dials
``/api/v2/organizations/{organization}/provisionerdaemons/serve`` with ``provisioner``, ``tag``
(``k=v``) and ``name`` query parameters, a websocket; ``ProvisionerDaemons`` lists
``GET /api/v2/provisionerdaemons``), ``provisionersdk.MutateTags`` (a daemon without an owner
gets ``scope: organization``).

The key comes from the primary's env (``CODER_PROVISIONER_DAEMON_PSK``): the lab's pods
supervisor reads it from the primary release's Secret and tells the emulator
(``PUT /emulator/provisioner-psk``); the emulator keeps only its sha256. A new key is a
restart of the primary's pod: every open serve connection ends. ASSUMED: the daemon's dRPC
session over the websocket is not played; a connected daemon is one whose websocket is open,
and its ``last_seen_at`` is the time of the list while it is (Coder updates it on heartbeats).
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from coder_migrate.lab.coderd.core import ApiError, now_iso, token_hash

if TYPE_CHECKING:
    from coder_migrate.lab.coderd.core import Emulator

__all__ = ["PSK_HEADER", "ProvisionerDaemons", "V2Provisioners"]

PSK_HEADER = "Coder-Provisioner-PSK"


@dataclass
class ProvisionerDaemons:
    """The daemons the primary knows (by name, as Coder upserts them) and the key it takes."""

    psk_hash: str = ""
    daemons: dict[str, dict[str, Any]] = field(default_factory=dict)
    sockets: dict[str, web.WebSocketResponse] = field(default_factory=dict)

    async def set_psk(self, psk: str) -> bool:
        """Take *psk* ("" for none); a different key ends every serve connection."""
        new = token_hash(psk) if psk else ""
        if new == self.psk_hash:
            return False
        self.psk_hash = new
        for socket in list(self.sockets.values()):
            await socket.close(code=1012, message=b"server restarting")
        return True

    def check(self, presented: str) -> None:
        if not self.psk_hash:
            raise ApiError(400, "External provisioner daemons not enabled")
        if not presented:
            raise ApiError(401, "provisioner daemon auth token required")
        if not hmac.compare_digest(token_hash(presented), self.psk_hash):
            raise ApiError(401, "provisioner daemon auth token invalid")


class V2Provisioners:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.state: ProvisionerDaemons = emulator.provisioners

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v2/provisionerdaemons", self.list_daemons)
        r.add_get("/api/v2/organizations/{organization}/provisionerdaemons", self.list_daemons)
        r.add_get("/api/v2/organizations/{organization}/provisionerdaemons/serve", self.serve)

    def _organization(self, request: web.Request) -> str:
        organization = str(self.emu.store.meta("deployment_id"))
        key = request.match_info.get("organization", organization)
        if key not in (organization, "default", "coder"):
            raise ApiError(404, "Resource not found or you do not have access to this resource")
        return organization

    async def list_daemons(self, request: web.Request) -> web.Response:
        self.emu.require_user(request)
        self._organization(request)
        now = now_iso()
        listed = [
            {**daemon, "last_seen_at": now if name in self.state.sockets
             else daemon["last_seen_at"]}
            for name, daemon in sorted(self.state.daemons.items())
        ]
        return web.json_response(listed)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        organization = self._organization(request)
        self.state.check(request.headers.get(PSK_HEADER, ""))
        tags: dict[str, str] = {}
        for tag in request.query.getall("tag", []):
            key, sep, value = tag.partition("=")
            if not sep or not key:
                raise ApiError(400, f"Invalid tag {tag!r}.")  # ASSUMED wording
            tags[key] = value
        tags.setdefault("scope", "organization")
        tags.setdefault("owner", "")
        name = request.query.get("name") or f"provisioner-{uuid.uuid4().hex[:8]}"
        socket = web.WebSocketResponse(heartbeat=20)
        await socket.prepare(request)
        known = self.state.daemons.get(name)
        now = now_iso()
        self.state.daemons[name] = {
            "id": known["id"] if known else str(uuid.uuid4()),
            "organization_id": organization,
            "created_at": known["created_at"] if known else now,
            "last_seen_at": now,
            "name": name,
            "version": self.emu.version,
            "api_version": request.query.get("version") or "1.0",
            "provisioners": request.query.getall("provisioner", []) or ["terraform"],
            "tags": tags,
        }
        previous = self.state.sockets.pop(name, None)
        if previous is not None:
            await previous.close()
        self.state.sockets[name] = socket
        try:
            async for message in socket:
                if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            if self.state.sockets.get(name) is socket:
                del self.state.sockets[name]
                self.state.daemons[name]["last_seen_at"] = now_iso()
        return socket
