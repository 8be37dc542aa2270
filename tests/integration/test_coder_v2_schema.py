"""The emulator's v2 answers carry exactly the fields the reference notes list.

Field lists: ../shared/reference/coder-v2-workspace-proxies.md §1 (workspace proxies,
regions, register, crypto keys, issue-signed-app-token) and §7 (premium message).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.fixtures.coderd import CoderEmulator

pytestmark = pytest.mark.integration

REGION_FIELDS = {
    "id",
    "name",
    "display_name",
    "icon_url",
    "healthy",
    "path_app_url",
    "wildcard_hostname",
}
PROXY_FIELDS = REGION_FIELDS | {
    "derp_enabled",
    "derp_only",
    "status",
    "created_at",
    "updated_at",
    "deleted",
    "version",
}
STATUS_FIELDS = {"status", "report", "checked_at"}
REPORT_FIELDS = {"errors", "warnings"}
STATUSES = {"ok", "unregistered", "unreachable", "unhealthy", "unknown"}
REGISTER_FIELDS = {
    "derp_mesh_key",
    "derp_region_id",
    "derp_map",
    "derp_force_websockets",
    "sibling_replicas",
}
SIBLING_FIELDS = {
    "id",
    "hostname",
    "created_at",
    "relay_address",
    "region_id",
    "error",
    "database_latency",
}
CRYPTO_KEY_FIELDS = {"feature", "secret", "deletes_at", "sequence", "starts_at"}
# codersdk.Response: `detail` and `validations` are omitted when empty.
ERROR_FIELDS = {"message"}


def check_proxy(proxy: dict[str, Any]) -> None:
    assert set(proxy) == PROXY_FIELDS
    assert set(proxy["status"]) == STATUS_FIELDS
    assert set(proxy["status"]["report"]) == REPORT_FIELDS
    assert proxy["status"]["status"] in STATUSES
    assert isinstance(proxy["status"]["report"]["errors"], list)  # never null
    assert isinstance(proxy["status"]["report"]["warnings"], list)
    for key in ("healthy", "derp_enabled", "derp_only", "deleted"):
        assert isinstance(proxy[key], bool), key
    for key in REGION_FIELDS - {"healthy"}:
        assert isinstance(proxy[key], str), key


def test_v2_response_shapes(coderd_v2: CoderEmulator) -> None:
    http = httpx.Client(
        base_url=coderd_v2.url, headers={"Coder-Session-Token": coderd_v2.admin_token}
    )
    name = f"schema-{uuid.uuid4().hex[:8]}"

    created = http.post(
        "/api/v2/workspaceproxies", json={"name": name, "display_name": "S", "icon": ""}
    )
    assert created.status_code == 201
    assert set(created.json()) == {"proxy", "proxy_token"}
    proxy = created.json()["proxy"]
    check_proxy(proxy)
    assert (proxy["path_app_url"], proxy["derp_enabled"], proxy["derp_only"]) == ("", True, False)
    assert proxy["status"]["status"] == "unregistered"
    token = created.json()["proxy_token"]

    listed = http.get("/api/v2/workspaceproxies")
    assert listed.status_code == 200
    body = listed.json()
    assert isinstance(body, dict) and set(body) == {"regions"}  # an object, not an array
    assert (
        body["regions"][0]["name"] == "primary" and body["regions"][0]["status"]["status"] == "ok"
    )
    for item in body["regions"]:
        check_proxy(item)

    for key in (name, proxy["id"], "primary"):
        got = http.get(f"/api/v2/workspaceproxies/{key}")
        assert got.status_code == 200, key
        check_proxy(got.json())

    patched = http.patch(
        f"/api/v2/workspaceproxies/{proxy['id']}",
        json={
            "id": proxy["id"],
            "name": name,
            "display_name": "S2",
            "icon": "/emojis/1f1ea-1f1fa.png",
            "regenerate_token": False,
        },
    )
    assert patched.status_code == 200 and set(patched.json()) == {"proxy", "proxy_token"}
    assert patched.json()["proxy_token"] == ""
    check_proxy(patched.json()["proxy"])

    regions = http.get("/api/v2/regions")
    assert set(regions.json()) == {"regions"}
    for region in regions.json()["regions"]:
        assert set(region) == REGION_FIELDS

    proxy_headers = {"Coder-External-Proxy-Token": token}
    replica = str(uuid.uuid4())
    registered = httpx.post(
        f"{coderd_v2.url}/api/v2/workspaceproxies/me/register",
        headers=proxy_headers,
        json={
            "access_url": "http://127.0.0.1:9",
            "wildcard_hostname": "",
            "derp_enabled": True,
            "derp_only": False,
            "replica_id": replica,
            "hostname": "h0",
            "replica_error": "",
            "replica_relay_address": "",
            "version": "v2.25.0",
        },
    )
    assert registered.status_code == 201
    assert set(registered.json()) == REGISTER_FIELDS
    assert isinstance(registered.json()["derp_region_id"], int)
    assert registered.json()["sibling_replicas"] == []
    second = httpx.post(
        f"{coderd_v2.url}/api/v2/workspaceproxies/me/register",
        headers=proxy_headers,
        json={
            "access_url": "http://127.0.0.1:9",
            "replica_id": str(uuid.uuid4()),
            "derp_enabled": True,
        },
    )
    assert [set(s) for s in second.json()["sibling_replicas"]] == [SIBLING_FIELDS]

    for feature in ("workspace_apps_token", "workspace_apps_api_key"):
        keys = httpx.get(
            f"{coderd_v2.url}/api/v2/workspaceproxies/me/crypto-keys",
            params={"feature": feature},
            headers=proxy_headers,
        )
        assert set(keys.json()) == {"crypto_keys"}
        for key in keys.json()["crypto_keys"]:
            assert set(key) == CRYPTO_KEY_FIELDS and key["feature"] == feature
            assert int(key["secret"], 16) >= 0  # hex

    deregistered = httpx.post(
        f"{coderd_v2.url}/api/v2/workspaceproxies/me/deregister",
        headers=proxy_headers,
        json={"replica_id": replica},
    )
    assert deregistered.status_code == 204

    deleted = http.delete(f"/api/v2/workspaceproxies/{name}")
    assert (deleted.status_code, deleted.json()) == (200, {"message": "Proxy has been deleted!"})
    soft = http.get(f"/api/v2/workspaceproxies/{proxy['id']}")
    assert soft.status_code == 200 and soft.json()["deleted"] is True
    gone = http.get(f"/api/v2/workspaceproxies/{name}")
    assert gone.status_code == 404 and set(gone.json()) == ERROR_FIELDS

    conflict = http.post("/api/v2/workspaceproxies", json={"name": "primary"})
    assert conflict.status_code == 400
    assert set(conflict.json()) == ERROR_FIELDS | {"detail", "validations"}


def test_v2_unlicensed_shape(coderd_v2_unlicensed: CoderEmulator) -> None:
    response = httpx.get(
        f"{coderd_v2_unlicensed.url}/api/v2/workspaceproxies",
        headers={"Coder-Session-Token": coderd_v2_unlicensed.admin_token},
    )
    assert response.status_code == 403
    assert response.json()["message"] == "Workspace Proxy is a Premium feature. Contact sales!"


def test_v1_error_shape(coderd_v1: CoderEmulator) -> None:
    response = httpx.get(f"{coderd_v1.url}/api/v0/users/me", headers={"Session-Token": "nope"})
    assert response.status_code == 401
    assert set(response.json()) == {"error"}
    assert set(response.json()["error"]) == {"msg", "code", "details"}
    assert response.headers["coder-version"] == "1.21.0"
