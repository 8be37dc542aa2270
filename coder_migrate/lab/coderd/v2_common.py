"""What the emulator's v2 route modules share: request bodies read and validated as coderd's
``httpapi.Read`` does, the proxies in the store, proxy-token auth, the JSON views.

Sources (coder/coder): ``coderd/httpapi/httpapi.go`` (``Read``: 400 "Request body must be
valid JSON." with the decoder's error as detail; 400 "Validation failed." with one
``{field, detail}`` per failed go-playground tag), ``codersdk/workspaceproxy.go`` (the request
structs and their ``validate`` tags), ``coderd/httpmw/workspaceproxy.go`` (proxy tokens).
"""

from __future__ import annotations

import re
import secrets
import uuid
from html import escape
from typing import Any, Literal

from aiohttp import web

from coder_migrate.lab.coderd.core import ApiError, Emulator, now_iso, token_hash
from coder_migrate.lab.coderd.store import Doc
from coder_migrate.providers.coder.models_v2 import PRIMARY_PROXY_NAME, CryptoKey
from coder_migrate.providers.coder.transport import PREMIUM_MESSAGE

__all__ = ["FieldKind", "Proxies", "html_error", "read_body"]

NIL_UUID = "00000000-0000-0000-0000-000000000000"
FieldKind = Literal["string", "bool", "uuid"]
_GO_TYPES = {"string": "string", "bool": "bool", "uuid": "uuid.UUID"}
_HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_JSON_TYPES = {str: "string", bool: "bool", int: "number", float: "number", list: "array",
               dict: "object", type(None): "null"}


async def read_body(
    request: web.Request,
    struct: str,
    fields: dict[str, FieldKind],
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The JSON body decoded into *struct*'s *fields* (unknown keys ignored, as Go's decoder
    does), then its ``validate:"required"`` fields checked, in struct order."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, "Request body must be valid JSON.", detail=str(error)) from None
    if not isinstance(body, dict):
        kind = _JSON_TYPES.get(type(body), "value")
        raise ApiError(400, "Request body must be valid JSON.",
                       detail=f"json: cannot unmarshal {kind} into Go value of type {struct}")
    decoded: dict[str, Any] = {}
    for name, kind in fields.items():
        value = body.get(name)
        if value is None:
            decoded[name] = {"string": "", "bool": False, "uuid": NIL_UUID}[kind]
        elif kind == "uuid" and isinstance(value, str):
            decoded[name] = _parse_uuid(value)
        elif (kind == "bool") != isinstance(value, bool) or not isinstance(value, str | bool):
            raise ApiError(400, "Request body must be valid JSON.", detail=(
                f"json: cannot unmarshal {_JSON_TYPES.get(type(value), 'value')} into Go struct "
                f"field {struct}.{name} of type {_GO_TYPES[kind]}"))
        else:
            decoded[name] = value
    failed = [name for name in required if decoded[name] in ("", NIL_UUID)]
    if failed:
        raise ApiError(400, "Validation failed.", validations=[
            {"field": name, "detail": f'Validation failed for tag "required" with value: '
                                      f'"{decoded[name]}"'} for name in failed])
    return decoded


def _parse_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(400, "Request body must be valid JSON.",
                       detail=f"invalid UUID length: {len(value)}") from None


APP_NOT_FOUND_DESCRIPTION = (
    "The application or workspace you are trying to access does not exist or you do not have "
    "permission to access it."
)


def html_error(status: int, title: str, text: str) -> web.Response:
    """The self-contained HTML error page coderd answers app requests with."""
    body = (
        f"<!doctype html><html><head><title>{escape(title)}</title></head>"
        f"<body><h1>{escape(title)}</h1><p>{escape(text)}</p></body></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html")


def app_not_found() -> web.Response:
    """What coderd answers every app request it will not serve, whether the workspace, agent
    or app does not exist or the user may not open it (coderd/workspaceapps/errors.go
    ``WriteWorkspaceApp404``): one page, so a user learns nothing about others' workspaces."""
    return html_error(404, "Application Not Found", APP_NOT_FOUND_DESCRIPTION)


class Proxies:
    """The workspace proxies in the store, and checks every v2 route module makes."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    def licensed(self) -> None:
        if self.emu.mode == "v2-unlicensed":
            raise ApiError(403, PREMIUM_MESSAGE)

    def live(self) -> list[Doc]:
        return [p for p in self.emu.store.all("proxy") if not p["deleted"]]

    def lookup(self, key: str) -> Doc | None:
        """By uuid (also soft-deleted) or by name (live only, any case)."""
        try:
            uuid.UUID(key)
        except ValueError:
            return next((p for p in self.live() if p["name"].lower() == key.lower()), None)
        return self.emu.store.get("proxy", key)

    def is_primary(self, key: str) -> bool:
        return key.lower() == PRIMARY_PROXY_NAME or key == str(self.emu.store.meta("deployment_id"))

    def authenticated(self, request: web.Request) -> Doc:
        """The proxy a ``Coder-External-Proxy-Token`` names, or 401 as coderd answers."""
        self.licensed()
        token = request.headers.get("Coder-External-Proxy-Token", "")
        if not token:
            raise ApiError(401, "Missing required external proxy token")
        proxy_id, _, secret = token.partition(":")
        proxy = self.emu.store.get("proxy", proxy_id) if proxy_id else None
        if proxy is None:
            raise ApiError(401, "Invalid external proxy token", detail="Proxy not found.")
        if proxy["deleted"]:
            raise ApiError(401, "Invalid external proxy token", detail="Proxy has been deleted.")
        if not secrets.compare_digest(proxy["token_hash"], token_hash(secret)):
            raise ApiError(
                401, "Invalid external proxy token", detail="Invalid proxy token secret."
            )
        return proxy

    @staticmethod
    def new_token(proxy_id: str) -> tuple[str, str]:
        """``<proxy id>:<64 hex>`` and the hash the store keeps."""
        secret = secrets.token_hex(32)
        return f"{proxy_id}:{secret}", token_hash(secret)

    def app_token_key(self, feature: str = "workspace_apps_token") -> CryptoKey:
        keys = [k for k in self.emu.store.all("crypto_key") if k["feature"] == feature]
        newest = max(keys, key=lambda k: int(k["sequence"]))
        return CryptoKey.model_validate(newest)

    def is_proxy_host(self, host: str) -> bool:
        """The host of a live proxy's access URL, or one under its wildcard hostname."""
        from urllib.parse import urlsplit

        for proxy in self.live():
            if proxy["url"] and urlsplit(proxy["url"]).hostname == host:
                return True
            pattern = proxy["wildcard_hostname"]
            if pattern:
                regex = re.escape(pattern.lower()).replace(r"\*", "[^.]+")
                if re.fullmatch(regex, host):
                    return True
        return False

    @staticmethod
    def valid_wildcard(pattern: str) -> bool:
        """``*.<host>`` or ``*<suffix>.<host>`` (Coder's hostname pattern rule, ASSUMED)."""
        if not pattern:
            return True
        pattern = pattern.lower()
        if not pattern.startswith("*") or pattern.count("*") != 1 or pattern.endswith("."):
            return False
        first, _, rest = pattern[1:].partition(".")
        if not rest or (first and not re.fullmatch(r"[a-z0-9-]+", first)):
            return False
        return all(_HOST_LABEL.match(label) for label in rest.split("."))

    # -- views -------------------------------------------------------------------------------

    def primary_json(self) -> dict[str, Any]:
        now = now_iso()
        deployment = str(self.emu.store.meta("deployment_id"))
        return {
            "id": deployment,
            "name": PRIMARY_PROXY_NAME,
            "display_name": self.emu.store.meta("primary_display_name") or "Default",
            "icon_url": self.emu.store.meta("primary_icon") or "/emojis/1f3e1.png",
            "healthy": True,
            "path_app_url": self.emu.access_url,
            "wildcard_hostname": self.emu.config.wildcard_hostname,
            "derp_enabled": True,
            "derp_only": False,
            "status": {"status": "ok", "report": {"errors": [], "warnings": []}, "checked_at": now},
            "created_at": now,
            "updated_at": now,
            "deleted": False,
            "version": self.emu.version,
        }

    @staticmethod
    def proxy_json(proxy: Doc) -> dict[str, Any]:
        status = proxy["status"]
        return {
            "id": proxy["id"],
            "name": proxy["name"],
            "display_name": proxy["display_name"],
            "icon_url": proxy["icon"],
            "healthy": status["status"] == "ok",
            "path_app_url": proxy["url"],
            "wildcard_hostname": proxy["wildcard_hostname"],
            "derp_enabled": proxy["derp_enabled"],
            "derp_only": proxy["derp_only"],
            "status": {
                "status": status["status"],
                "report": {
                    "errors": list(status["report"]["errors"]),
                    "warnings": list(status["report"]["warnings"]),
                },
                "checked_at": status["checked_at"],
            },
            "created_at": proxy["created_at"],
            "updated_at": proxy["updated_at"],
            "deleted": proxy["deleted"],
            "version": proxy["version"],
        }

    @staticmethod
    def region_json(proxy: dict[str, Any]) -> dict[str, Any]:
        keys = ("id", "name", "display_name", "icon_url", "healthy", "path_app_url")
        return {**{k: proxy[k] for k in keys}, "wildcard_hostname": proxy["wildcard_hostname"]}
