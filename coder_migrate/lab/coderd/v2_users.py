"""The user routes of the v2 emulator the toolkit and the real ``coder`` CLI call (``coder
login`` asks ``users/first``, then checks the session with ``users/me``; ``login`` with a
password and ``tokens create`` mint keys with ``users/{user}/keys``).

Sources (coder/coder): ``coderd/users.go`` (``firstUser``: 200 "The initial user has already
been created!", 404 "The initial user has not been created!"; ``users``: ``{users, count}``),
``coderd/apikey.go`` (``postAPIKey``: 201 ``{key}``), ``codersdk/users.go`` (the User JSON).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from coder_migrate.lab.coderd.core import ApiError, Emulator
from coder_migrate.lab.coderd.store import Doc

__all__ = ["V2Users"]


class V2Users:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/v2/users/first", self.first_user)
        r.add_get("/api/v2/users", self.list_users)
        r.add_get("/api/v2/users/{user}", self.user)
        r.add_post("/api/v2/users/{user}/keys", self.create_key)

    def user_json(self, user: Doc) -> dict[str, Any]:
        """codersdk.User, the fields the CLI prints and the toolkit reads."""
        owner = self.emu.is_site_admin(user)
        return {
            "id": user["id"],
            "username": user["username"],
            "email": user["email"],
            "name": user["name"],
            "created_at": user["created_at"],
            "updated_at": user["updated_at"],
            "last_seen_at": user["updated_at"],
            "status": "active",
            "login_type": "password",
            "organization_ids": [str(self.emu.store.meta("deployment_id"))],
            "roles": [{"name": "owner", "display_name": "Owner"}] if owner else [],
            "avatar_url": "",
            "theme_preference": "",
        }

    def _named(self, request: web.Request) -> Doc:
        """The user of ``{user}``: ``me``, an id or a username (httpmw.ExtractUserParam)."""
        caller = self.emu.require_user(request)
        key = request.match_info["user"]
        user = caller if key == "me" else self.emu.user_by_name_or_id(key)
        if user is None:
            raise ApiError(400, f'User "{key}" not found.')  # ASSUMED wording
        if user["id"] != caller["id"] and not self.emu.is_site_admin(caller):
            raise ApiError(404, "Resource not found or you do not have access to this resource")
        return user

    async def first_user(self, _request: web.Request) -> web.Response:
        if not self.emu.store.all("user"):
            raise ApiError(404, "The initial user has not been created!")
        return web.json_response({"message": "The initial user has already been created!"})

    async def list_users(self, request: web.Request) -> web.Response:
        caller = self.emu.require_user(request)
        users = self.emu.store.all("user") if self.emu.is_site_admin(caller) else [caller]
        return web.json_response(
            {"users": [self.user_json(u) for u in users], "count": len(users)}
        )

    async def user(self, request: web.Request) -> web.Response:
        return web.json_response(self.user_json(self._named(request)))

    async def create_key(self, request: web.Request) -> web.Response:
        user = self._named(request)
        return web.json_response({"key": self.emu.new_session(user["id"])}, status=201)
