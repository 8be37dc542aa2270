"""Contract tests of the Coder emulator: for each call the toolkit (and the real CLIs) make, the
request exactly as the toolkit's client sends it is accepted, and what real Coder rejects is
rejected with real Coder's status and body.

Recorded requests come from the toolkit's own clients (``coder_migrate.providers.coder``)
talking to a real emulator process through a transport that keeps a copy of each request.
Sources of the real answers (coder/coder): ``coderd/httpapi/httpapi.go`` (``Read``,
``RouteNotFound``, ``ResourceNotFound``), ``codersdk/client.go`` (``Response``: ``detail`` and
``validations`` omitempty; ``BuildVersionHeader``), ``codersdk/workspaceproxy.go`` (required
fields), ``enterprise/coderd/workspaceproxy.go`` (handlers), ``coderd/users.go``
(``firstUser``); v1: ``cdr/coder-cli`` v1.21.0 ``coder-sdk`` (image.go, tokens.go,
workspace.go) and ``internal/cmd/rebuild.go`` (``trailBuildLogs`` returns on ``done`` only).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from websockets.asyncio.client import connect

from coder_migrate.errors import CoderAPIError
from coder_migrate.providers.coder import CoderV1Client, CoderV2Client, RetryPolicy
from coder_migrate.providers.coder import satellite_key as keys
from tests.fixtures.coderd import CoderEmulator

pytestmark = pytest.mark.integration

T = TypeVar("T")
FAST = RetryPolicy(attempts=1, base_delay=0.01, max_delay=0.01)
ICON = "/emojis/1f1ea-1f1fa.png"  # the flag of IE, what eu-west gets by default
REQUIRED = 'Validation failed for tag "required" with value: "{}"'
NIL = "00000000-0000-0000-0000-000000000000"


class Recording(httpx.AsyncBaseTransport):
    """The real HTTP transport, keeping (method, path, JSON body) of every request."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[tuple[str, str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self.sent.append((request.method, request.url.path, json.loads(body) if body else None))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def v2_call(emulator: CoderEmulator, call: Callable[[CoderV2Client], Awaitable[T]]) -> tuple[
    T, list[tuple[str, str, Any]]
]:
    recording = Recording()

    async def run() -> T:
        async with CoderV2Client(emulator.url, emulator.admin_token, retry=FAST,
                                 transport=recording) as client:
            return await call(client)

    return asyncio.run(run()), recording.sent


def v1_call(emulator: CoderEmulator, call: Callable[[CoderV1Client], Awaitable[T]]) -> tuple[
    T, list[tuple[str, str, Any]]
]:
    recording = Recording()

    async def run() -> T:
        async with CoderV1Client(emulator.url, emulator.admin_token, retry=FAST,
                                 transport=recording) as client:
            return await call(client)

    return asyncio.run(run()), recording.sent


def raw(emulator: CoderEmulator, method: str, path: str, body: Any = None,
        token: str | None = None) -> httpx.Response:
    value = token or emulator.admin_token
    # v2 reads Coder-Session-Token, v1 Session-Token; "" sends none.
    headers = {} if token == "" else {"Coder-Session-Token": value, "Session-Token": value}
    return httpx.request(method, emulator.url + path, json=body, headers=headers, timeout=30,
                         trust_env=False)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- v2: POST /api/v2/workspaceproxies --------------------------------------------------------


def test_create_as_the_toolkit_sends_it(coderd_v2: CoderEmulator) -> None:
    name = unique("create")
    created, sent = v2_call(coderd_v2, lambda c: c.create_proxy(
        name, display_name="EU West", icon=ICON))
    assert sent == [("POST", "/api/v2/workspaceproxies",
                     {"name": name, "display_name": "EU West", "icon": ICON})]
    proxy = created.proxy
    assert (proxy.display_name, proxy.icon_url, proxy.status.status) == ("EU West", ICON,
                                                                         "unregistered")
    # postWorkspaceProxy answers with the status checked at the creation time.
    assert proxy.status.checked_at == proxy.created_at


def test_create_stores_the_display_name_as_given(coderd_v2: CoderEmulator) -> None:
    name = unique("nodisplay")
    response = raw(coderd_v2, "POST", "/api/v2/workspaceproxies", {"name": name})
    assert response.status_code == 201
    assert (response.json()["proxy"]["display_name"], response.json()["proxy"]["icon_url"]) == (
        "", "")


@pytest.mark.parametrize(
    ("body", "status", "answer"),
    [
        ({"display_name": "No name"}, 400, {
            "message": "Validation failed.",
            "validations": [{"field": "name", "detail": REQUIRED.format("")}]}),
        ({"name": "Primary"}, 400, {
            "message": 'The name "primary" is reserved for the primary region.',
            "detail": "Cannot name a workspace proxy 'primary'.",
            "validations": [{"field": "name", "detail": "Reserved name"}]}),
        ({"name": 7}, 400, {
            "message": "Request body must be valid JSON.",
            "detail": "json: cannot unmarshal number into Go struct field "
                      "codersdk.CreateWorkspaceProxyRequest.name of type string"}),
    ],
)
def test_create_refused_as_real_coder_refuses_it(
    coderd_v2: CoderEmulator, body: dict[str, Any], status: int, answer: dict[str, Any]
) -> None:
    response = raw(coderd_v2, "POST", "/api/v2/workspaceproxies", body)
    assert (response.status_code, response.json()) == (status, answer)


def test_create_of_a_taken_name_is_409(coderd_v2: CoderEmulator) -> None:
    name = unique("taken")
    assert raw(coderd_v2, "POST", "/api/v2/workspaceproxies", {"name": name}).status_code == 201
    again = raw(coderd_v2, "POST", "/api/v2/workspaceproxies", {"name": name.upper()})
    assert (again.status_code, again.json()) == (
        409, {"message": f'Workspace proxy with name "{name.upper()}" already exists.'})


# -- v2: PATCH /api/v2/workspaceproxies/{id} ----------------------------------------------------


def _created(emulator: CoderEmulator, **fields: str) -> dict[str, Any]:
    response = raw(emulator, "POST", "/api/v2/workspaceproxies",
                   {"name": unique("patch"), **fields})
    assert response.status_code == 201, response.text
    return dict(response.json()["proxy"])


def test_display_name_update_as_the_toolkit_sends_it(coderd_v2: CoderEmulator) -> None:
    """The engine's update: display name and icon; an icon-less proxy gets one."""
    proxy = _created(coderd_v2)
    updated, sent = v2_call(coderd_v2, lambda c: c.update_proxy(
        proxy["id"], display_name="EU West", icon=ICON))
    assert sent[-1] == ("PATCH", f"/api/v2/workspaceproxies/{proxy['id']}", {
        "id": proxy["id"], "name": proxy["name"], "display_name": "EU West", "icon": ICON,
        "regenerate_token": False})
    assert (updated.proxy.display_name, updated.proxy.icon_url) == ("EU West", ICON)
    assert updated.proxy_token.get_secret_value() == ""


def test_regenerate_token_as_the_toolkit_sends_it(coderd_v2: CoderEmulator) -> None:
    proxy = _created(coderd_v2)
    fresh, sent = v2_call(coderd_v2, lambda c: c.regenerate_proxy_token(
        proxy["id"], display_name="EU West", icon=ICON))
    assert sent[-1][2] == {"id": proxy["id"], "name": proxy["name"], "display_name": "EU West",
                           "icon": ICON, "regenerate_token": True}
    assert fresh.proxy_token.get_secret_value().startswith(f"{proxy['id']}:")


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        ({"icon": ""}, [("icon", "")]),
        ({"display_name": ""}, [("display_name", "")]),
        ({"id": None}, [("id", NIL)]),
        ({"id": None, "name": "", "display_name": "", "icon": ""},
         [("id", NIL), ("name", ""), ("display_name", ""), ("icon", "")]),
    ],
)
def test_patch_with_an_empty_required_field_is_400(
    coderd_v2: CoderEmulator, change: dict[str, Any], failed: list[tuple[str, str]]
) -> None:
    """PatchWorkspaceProxy: id, name, display_name and icon are validate:"required"; the old
    toolkit's ``icon: ""`` (from a proxy created without one) was refused so."""
    proxy = _created(coderd_v2, display_name="D")
    body = {"id": proxy["id"], "name": proxy["name"], "display_name": "D", "icon": ICON,
            "regenerate_token": True, **change}
    response = raw(coderd_v2, "PATCH", f"/api/v2/workspaceproxies/{proxy['id']}", body)
    assert (response.status_code, response.json()) == (400, {
        "message": "Validation failed.",
        "validations": [{"field": f, "detail": REQUIRED.format(v)} for f, v in failed]})
    after = raw(coderd_v2, "GET", f"/api/v2/workspaceproxies/{proxy['id']}").json()
    assert after["display_name"] == "D"  # nothing changed


def test_patch_of_the_primary_keeps_its_name(coderd_v2: CoderEmulator) -> None:
    primary = raw(coderd_v2, "GET", "/api/v2/workspaceproxies/primary").json()
    body = {"id": primary["id"], "name": "main", "display_name": "Main", "icon": ICON}
    response = raw(coderd_v2, "PATCH", "/api/v2/workspaceproxies/primary", body)
    assert (response.status_code, response.json()) == (400, {
        "message": "Cannot update name of default primary proxy, did you mean to update the "
                   "'display name'?",
        "validations": [{"field": "name", "detail": "Cannot update name of default primary proxy"}],
    })


# -- v2: GET and DELETE ----------------------------------------------------------------------


def test_delete_as_the_toolkit_sends_it_and_what_is_refused(coderd_v2: CoderEmulator) -> None:
    proxy = _created(coderd_v2)
    _, sent = v2_call(coderd_v2, lambda c: c.delete_proxy(proxy["id"]))
    assert sent == [("DELETE", f"/api/v2/workspaceproxies/{proxy['id']}", None)]
    primary = raw(coderd_v2, "DELETE", "/api/v2/workspaceproxies/primary")
    assert (primary.status_code, primary.json()) == (
        400, {"message": "Cannot delete primary proxy"})
    unknown = raw(coderd_v2, "DELETE", f"/api/v2/workspaceproxies/{unique('nobody')}")
    assert (unknown.status_code, unknown.json()) == (
        404, {"message": "Resource not found or you do not have access to this resource"})


def test_list_and_get_as_the_toolkit_sends_them(coderd_v2: CoderEmulator) -> None:
    proxy = _created(coderd_v2, display_name="Listed", icon=ICON)
    found, sent = v2_call(coderd_v2, lambda c: c.find_proxy(proxy["name"]))
    assert found is not None and found.icon_url == ICON
    assert sent == [("GET", f"/api/v2/workspaceproxies/{proxy['name']}", None)]
    listed, _ = v2_call(coderd_v2, lambda c: c.list_proxies())
    assert listed[0].name == "primary" and proxy["name"] in {p.name for p in listed}


# -- v2: every answer, users, routes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v2/buildinfo", 200),
        ("GET", "/api/v2/users/first", 200),
        ("GET", "/api/v2/workspaceproxies/no-such-proxy", 404),
        ("POST", "/api/v2/workspaceproxies", 400),
        ("GET", "/api/v2/no-such-route", 404),
        ("GET", "/api/v2/applications/auth-redirect", 400),  # an HTML error page
    ],
)
def test_every_answer_names_the_build_version(
    coderd_v2: CoderEmulator, method: str, path: str, status: int
) -> None:
    response = httpx.request(method, coderd_v2.url + path, json={} if method == "POST" else None,
                             headers={"Coder-Session-Token": coderd_v2.admin_token},
                             follow_redirects=False, timeout=30, trust_env=False)
    assert response.status_code == status
    assert response.headers["X-Coder-Build-Version"] == raw(
        coderd_v2, "GET", "/api/v2/buildinfo").json()["version"]


def test_unknown_route_is_route_not_found(coderd_v2: CoderEmulator) -> None:
    response = raw(coderd_v2, "GET", "/api/v2/no-such-route")
    assert (response.status_code, response.json()) == (404, {"message": "Route not found."})


def test_what_coder_login_calls(coderd_v2: CoderEmulator) -> None:
    """``coder login``: users/first (200 once a user exists), then the session checked with
    users/me; ``tokens create`` and a password login mint keys with users/{user}/keys."""
    first = httpx.get(f"{coderd_v2.url}/api/v2/users/first", timeout=30, trust_env=False)
    assert (first.status_code, first.json()) == (
        200, {"message": "The initial user has already been created!"})
    me, sent = v2_call(coderd_v2, lambda c: c.me())
    assert sent == [("GET", "/api/v2/users/me", None)]
    minted = raw(coderd_v2, "POST", "/api/v2/users/me/keys")
    assert minted.status_code == 201 and set(minted.json()) == {"key"}
    as_key = raw(coderd_v2, "GET", "/api/v2/users/me", token=minted.json()["key"])
    assert as_key.status_code == 200 and as_key.json()["id"] == me.id
    users = raw(coderd_v2, "GET", "/api/v2/users").json()
    assert set(users) == {"users", "count"} and users["count"] == len(users["users"])
    assert {"admin", "platform-bot"} <= {u["username"] for u in users["users"]}
    refused = raw(coderd_v2, "POST", "/api/v2/users/me/keys", token="")
    assert refused.status_code == 401 and set(refused.json()) <= {"message", "detail"}


# -- v1 -------------------------------------------------------------------------------------


def test_satellite_registration_as_the_toolkit_sends_it(coderd_v1: CoderEmulator) -> None:
    public = keys.public_key_pem(keys.generate_private_key_pem())
    name = unique("sat")
    created, sent = v1_call(coderd_v1, lambda c: c.create_satellite(name, public))
    assert sent[-1] == ("POST", "/api/private/satellites", {"name": name, "public_key": public})
    assert created.fingerprint == keys.fingerprint(public)
    missing = raw(coderd_v1, "POST", "/api/private/satellites", {"name": unique("sat")},
                  token=coderd_v1.admin_token)
    assert missing.status_code == 400
    assert missing.json() == {"error": {"msg": "public_key is required", "code": "bad_request",
                                        "details": [{"field": "public_key"}]}}


def test_what_the_v1_cli_lists_with(coderd_v1: CoderEmulator) -> None:
    """``coder workspaces ls`` reads each workspace's image (GET /api/v0/images/{id}),
    ``coder tokens ls`` the caller's keys (GET /api/v0/api-keys/me)."""
    headers = {"Session-Token": coderd_v1.admin_token}
    workspaces = httpx.get(f"{coderd_v1.url}/api/v0/workspaces", headers=headers,
                           trust_env=False).json()
    image = httpx.get(f"{coderd_v1.url}/api/v0/images/{workspaces[0]['image_id']}",
                      headers=headers, trust_env=False)
    assert image.status_code == 200
    assert image.json()["id"] == workspaces[0]["image_id"]
    assert image.json()["default_tag"]["tag"] == workspaces[0]["image_tag"]
    created = httpx.post(f"{coderd_v1.url}/api/v0/api-keys/me", json={"name": "ci"},
                         headers=headers, trust_env=False)
    assert created.status_code == 200 and set(created.json()) == {"key"}
    listed = httpx.get(f"{coderd_v1.url}/api/v0/api-keys/me", headers=headers, trust_env=False)
    assert "ci" in {k["name"] for k in listed.json()}
    assert {"id", "name", "application", "user_id", "last_used"} == set(listed.json()[0])
    unknown = httpx.get(f"{coderd_v1.url}/api/v0/images/{uuid.uuid4()}", headers=headers,
                        trust_env=False)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


def _watch(url: str, token: str, workspace_id: str) -> list[dict[str, Any]]:
    """Every event ``watch-update`` sends until it closes (what ``watch-build`` prints)."""

    async def run() -> list[dict[str, Any]]:
        path = f"/api/private/workspaces/{workspace_id}/watch-update"
        uri = url.replace("http://", "ws://") + path
        events = []
        async with asyncio.timeout(30), connect(
            uri, additional_headers={"Session-Token": token}, proxy=None
        ) as socket:
            async for message in socket:
                events.append(json.loads(message))
        return events

    return asyncio.run(run())


def test_watch_build_of_a_workspace_never_rebuilt_replays_its_log(
    coderd_factory: Callable[..., CoderEmulator],
) -> None:
    emulator = coderd_factory("v1.21")
    workspace = raw(emulator, "GET", "/api/v0/workspaces").json()[0]
    events = _watch(emulator.url, emulator.admin_token, workspace["id"])
    assert (events[0]["type"], events[-1]["type"]) == ("start", "done")
    # Kept across a restart, as real Coder keeps build logs.
    emulator.restart()
    assert _watch(emulator.url, emulator.admin_token, workspace["id"]) == events


def test_a_failed_build_ends_with_done_after_its_error(
    coderd_factory: Callable[..., CoderEmulator],
) -> None:
    emulator = coderd_factory("v1.21", config={"build_step_seconds": 0.05})
    workspace = raw(emulator, "GET", "/api/v0/workspaces").json()[0]
    emulator.add_fault(kind="fail_build", workspace=workspace["name"])

    async def rebuild() -> None:
        async with CoderV1Client(emulator.url, emulator.admin_token, retry=FAST) as client:
            await client.rebuild_workspace(workspace["id"])
            with pytest.raises(CoderAPIError, match="workspace build failed"):
                await client.wait_for_build(workspace["id"], timeout=30)

    asyncio.run(rebuild())
    types = [e["type"] for e in _watch(emulator.url, emulator.admin_token, workspace["id"])]
    assert types[-2:] == ["error", "done"] and types[0] == "start"


def test_networking_v2_and_rebuild_as_the_toolkit_sends_them(
    coderd_factory: Callable[..., CoderEmulator],
) -> None:
    """The migration's two v1 writes: a provider's Networking v2 switch (ASSUMED route, the
    only documented way is the dashboard) and a rebuild (an all-null UpdateWorkspaceReq,
    coder-sdk workspace.go); a field neither takes is refused with the v1 error body."""
    emulator = coderd_factory("v1.21", config={"build_step_seconds": 0.01})
    provider = raw(emulator, "GET", "/api/private/resource-pools").json()["kubernetes"][0]
    switched, sent = v1_call(emulator, lambda c: c.set_networking_v2(provider["id"], True))
    assert [s for s in sent if s[0] == "PATCH"] == [
        ("PATCH", f"/api/private/resource-pools/{provider['id']}", {"enable_net_v2": True})]
    assert switched.enable_net_v2 is True
    bad = raw(emulator, "PATCH", f"/api/private/resource-pools/{provider['id']}",
              {"enable_net_v2": "yes"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad_request")

    workspace = raw(emulator, "GET", "/api/v0/workspaces").json()[0]
    _, sent = v1_call(emulator, lambda c: c.rebuild_workspace(workspace["id"]))
    (method, path, body), = [s for s in sent if s[0] == "PATCH"]
    assert (method, path) == ("PATCH", f"/api/v0/workspaces/{workspace['id']}")
    assert body == dict.fromkeys(
        ("image_id", "image_tag", "cpu_cores", "memory_gb", "disk_gb", "gpus", "template_id"))
    unknown = raw(emulator, "PATCH", f"/api/v0/workspaces/{workspace['id']}", {"name": "x"})
    assert unknown.status_code == 400 and unknown.json()["error"]["msg"] == "unknown field(s): name"


def test_proxy_registration_as_the_bundled_proxy_sends_it(coderd_v2: CoderEmulator) -> None:
    from coder_migrate.providers.coder import CoderV2ProxyClient

    token = raw(coderd_v2, "POST", "/api/v2/workspaceproxies",
                {"name": unique("reg"), "display_name": "R", "icon": ICON}).json()["proxy_token"]
    body = {"access_url": "http://127.0.0.1:9", "wildcard_hostname": "", "derp_enabled": False,
            "derp_only": False, "replica_id": str(uuid.uuid4()), "hostname": "h",
            "replica_error": "", "replica_relay_address": "", "version": "v2.15.0"}
    recording = Recording()

    async def register() -> int:
        async with CoderV2ProxyClient(coderd_v2.url, token, retry=FAST,
                                      transport=recording) as proxy:
            registered = await proxy.register(body)
            return registered.derp_region_id

    assert asyncio.run(register()) >= 1
    assert recording.sent == [("POST", "/api/v2/workspaceproxies/me/register", body)]
    with_path = httpx.post(f"{coderd_v2.url}/api/v2/workspaceproxies/me/register",
                           json={**body, "access_url": "http://127.0.0.1:9/sub"},
                           headers={"Coder-External-Proxy-Token": token}, trust_env=False)
    assert with_path.status_code == 400
    assert with_path.json()["message"] == (
        "Access URL must be a valid http(s) URL with an empty path or '/'.")
    no_token = httpx.post(f"{coderd_v2.url}/api/v2/workspaceproxies/me/register", json=body,
                          trust_env=False)
    assert (no_token.status_code, no_token.json()) == (
        401, {"message": "Missing required external proxy token"})
