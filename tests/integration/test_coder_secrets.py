"""No token or key appears in any client exception text or log line, on every error path."""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from coder_migrate.errors import CoderAPIError
from coder_migrate.providers.coder import (
    CoderV1Client,
    CoderV1SatelliteClient,
    CoderV2Client,
    CoderV2ProxyClient,
    RetryPolicy,
    satellite_key,
)
from coder_migrate.providers.coder.app_tokens import verify_app_token
from tests.fixtures.coderd import CoderEmulator

pytestmark = pytest.mark.integration
FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
BAD_SESSION = "badbadbad0-Secr3tSecr3tSecr3tSecr3t"
Action = Callable[[], Awaitable[Any]]


def secret_fragments(secrets: list[str]) -> list[str]:
    """Each secret and, for ``id:secret`` tokens and PEM keys, its secret part."""
    fragments = []
    for secret in secrets:
        fragments.append(secret)
        if ":" in secret and "BEGIN" not in secret:
            fragments.append(secret.split(":", 1)[1])
        if "-" in secret and "BEGIN" not in secret:
            fragments.append(secret.rsplit("-", 1)[1])
        if "BEGIN" in secret:
            fragments += [
                line for line in secret.splitlines() if len(line) > 20 and "-----" not in line
            ]
    return [f for f in fragments if len(f) >= 16]


def assert_clean(texts: list[str], secrets: list[str]) -> None:
    for fragment in secret_fragments(secrets):
        for text in texts:
            assert fragment not in text, f"a secret leaked into: {text[:300]}"


def test_client_error_paths_leak_no_secret(
    coderd_v1: CoderEmulator,
    coderd_v1_20: CoderEmulator,
    coderd_v2: CoderEmulator,
    coderd_v2_unlicensed: CoderEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    satellite_private = satellite_key.generate_private_key_pem()
    unregistered_private = satellite_key.generate_private_key_pem()
    user_token = coderd_v2.user_token("platform-bot")
    workspace_id = coderd_v1.agents()[0]["workspace_id"]
    secrets = [
        coderd_v1.admin_token,
        coderd_v1_20.admin_token,
        coderd_v2.admin_token,
        coderd_v2_unlicensed.admin_token,
        BAD_SESSION,
        user_token,
        satellite_private,
        unregistered_private,
    ]
    errors: list[BaseException] = []

    async def expect_error(action: Action) -> None:
        try:
            await action()
        except CoderAPIError as error:
            errors.append(error)
        else:
            pytest.fail("the call was expected to fail")

    async def scenario() -> None:
        v1 = CoderV1Client(coderd_v1.url, coderd_v1.admin_token, retry=FAST, timeout=1)
        v1_bad = CoderV1Client(coderd_v1.url, BAD_SESSION, retry=FAST)
        v1_old = CoderV1Client(coderd_v1_20.url, coderd_v1_20.admin_token, retry=FAST)
        v1_down = CoderV1Client("http://127.0.0.1:9", coderd_v1.admin_token, retry=FAST)
        v2 = CoderV2Client(coderd_v2.url, coderd_v2.admin_token, retry=FAST)
        v2_bad = CoderV2Client(coderd_v2.url, BAD_SESSION, retry=FAST)
        v2_free = CoderV2Client(
            coderd_v2_unlicensed.url, coderd_v2_unlicensed.admin_token, retry=FAST
        )
        v2_down = CoderV2Client("http://127.0.0.1:9", coderd_v2.admin_token, retry=FAST)

        created = await v2.create_proxy(f"secret-{uuid.uuid4().hex[:8]}")
        proxy_token = created.proxy_token.get_secret_value()
        wrong_secret_token = f"{created.proxy.id}:{'f' * 64}"
        deleted = await v2.create_proxy(f"secret-{uuid.uuid4().hex[:8]}")
        deleted_token = deleted.proxy_token.get_secret_value()
        await v2.delete_proxy(deleted.proxy.id)
        secrets.extend([proxy_token, wrong_secret_token, deleted_token])
        proxy = CoderV2ProxyClient(coderd_v2.url, proxy_token, retry=FAST)
        proxy_wrong = CoderV2ProxyClient(coderd_v2.url, wrong_secret_token, retry=FAST)
        proxy_deleted = CoderV2ProxyClient(coderd_v2.url, deleted_token, retry=FAST)
        keys = await proxy.crypto_keys()
        secrets.extend(k.secret.get_secret_value() for k in keys)
        satellite = await v1.create_satellite(
            f"secret-{uuid.uuid4().hex[:8]}", satellite_key.public_key_pem(satellite_private)
        )
        sat_unknown = CoderV1SatelliteClient(coderd_v1.url, unregistered_private, retry=FAST)

        # v1 paths
        await expect_error(v1_bad.me)
        await expect_error(v1_bad.list_providers)
        await expect_error(v1_old.list_satellites)
        await expect_error(lambda: v1_old.set_networking_v2("x", True))
        await expect_error(
            lambda: v1.create_satellite(
                satellite.name, satellite_key.public_key_pem(satellite_private)
            )
        )
        await expect_error(
            lambda: v1.create_satellite("bad-key", "-----BEGIN PUBLIC KEY-----\nAAAA")
        )
        await expect_error(lambda: v1.delete_satellite("missing"))
        await expect_error(lambda: v1.get_provider("missing"))
        await expect_error(lambda: v1.get_workspace("missing"))
        await expect_error(v1_down.me)
        await expect_error(
            lambda: v1.fetch_satellite_key("http://127.0.0.1:9/x?token=" + BAD_SESSION)
        )

        async def watch_with_bad_token() -> None:
            async for _ in v1_bad.watch_build(workspace_id):
                pass

        await expect_error(watch_with_bad_token)
        coderd_v1.add_fault(kind="status", status=503, path="/api/v0/orgs")
        await expect_error(v1.list_orgs)
        coderd_v1.add_fault(kind="drop", path="/api/private/resource-pools")
        await expect_error(v1.list_providers)
        coderd_v1.add_fault(kind="latency", seconds=3, path="/api/v0/users/me")
        await expect_error(v1.me)
        coderd_v1.clear_faults()
        coderd_v1.add_fault(kind="fail_build", workspace=workspace_id, count=1)
        await v1.rebuild_workspace(workspace_id)
        await expect_error(lambda: v1.wait_for_build(workspace_id, timeout=30))
        coderd_v1.add_fault(kind="stuck_build", workspace=workspace_id, count=1)
        await v1.rebuild_workspace(workspace_id)
        await expect_error(lambda: v1.wait_for_build(workspace_id, timeout=0.5))
        await v1.rebuild_workspace(workspace_id)
        await v1.wait_for_build(workspace_id, timeout=30)
        await expect_error(lambda: sat_unknown.workspace_address(workspace_id))

        # v2 paths
        await expect_error(v2_bad.list_proxies)
        await expect_error(v2_free.list_proxies)
        await expect_error(lambda: v2_free.create_proxy("x"))
        await expect_error(lambda: v2.create_proxy(created.proxy.name))
        await expect_error(lambda: v2.create_proxy("primary"))
        await expect_error(lambda: v2.get_proxy("missing"))
        await expect_error(lambda: v2.delete_proxy("primary"))
        await expect_error(v2_down.buildinfo)
        coderd_v2.add_fault(kind="status", status=503, path="/api/v2/buildinfo")
        await expect_error(v2.buildinfo)
        coderd_v2.add_fault(kind="drop", path="/api/v2/regions")
        await expect_error(v2.list_regions)
        coderd_v2.clear_faults()
        await expect_error(proxy_wrong.crypto_keys)
        await expect_error(proxy_deleted.crypto_keys)
        await expect_error(lambda: proxy.crypto_keys("nope"))
        await expect_error(
            lambda: proxy.register({"access_url": "ftp://x", "replica_id": str(uuid.uuid4())})
        )
        await expect_error(lambda: proxy.agent_address(str(uuid.uuid4())))
        issued = await proxy.issue_signed_app_token(
            {
                "app_request": {
                    "access_method": "path",
                    "username_or_id": "platform-bot",
                    "workspace_name_or_id": "migration-check-us-east",
                    "app_slug_or_port": "code-server",
                },
                "session_token": user_token,
            }
        )
        app_token = issued.json()["signed_token_str"]
        secrets.append(app_token)
        forged = [keys[0].model_copy(update={"secret": keys[0].secret.__class__("00" * 64)})]

        async def verify_forged() -> None:
            verify_app_token(app_token, forged)

        await expect_error(verify_forged)

        for client in (
            v1,
            v1_bad,
            v1_old,
            v1_down,
            v2,
            v2_bad,
            v2_free,
            v2_down,
            proxy,
            proxy_wrong,
            proxy_deleted,
            sat_unknown,
        ):
            await client.aclose()

    asyncio.run(scenario())
    assert len(errors) == 34  # every expect_error above
    texts = ["".join(traceback.format_exception(e)) for e in errors]
    texts += [repr(e) for e in errors]
    texts += [record.getMessage() for record in caplog.records]
    texts.append(caplog.text)
    for emulator in (coderd_v1, coderd_v1_20, coderd_v2, coderd_v2_unlicensed):
        assert emulator.log_file is not None
        texts.append(emulator.log_file.read_text())
    assert_clean(texts, secrets)
    # Every client error names the call.
    assert all(
        isinstance(e, CoderAPIError) and (e.path or "signed app token" in str(e)) for e in errors
    )
