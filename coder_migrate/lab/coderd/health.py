"""The v2 proxy health poller (reference: coder-v2-workspace-proxies.md §2)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import httpx

from coder_migrate.lab.coderd.core import Emulator, now_iso
from coder_migrate.lab.coderd.store import Doc

__all__ = ["HealthPoller", "classify"]

log = logging.getLogger("coder_migrate.lab.coderd.health")
CHECK_TIMEOUT_SECONDS = 5.0
PARALLEL_CHECKS = 5


def classify(url: str, response: httpx.Response | None, error: str = "") -> dict[str, Any]:
    """Status and report for one check, exactly as documented."""
    if not url:
        return {"status": "unregistered", "report": {"errors": [], "warnings": []}}
    if response is None:
        return {
            "status": "unreachable",
            "report": {"errors": [f"request healthz-report: {error}"], "warnings": []},
        }
    if response.status_code != 200:
        return {
            "status": "unhealthy",
            "report": {
                "errors": [f"unexpected status code {response.status_code}"],
                "warnings": [],
            },
        }
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        return {
            "status": "unhealthy",
            "report": {"errors": ["healthz-report body is not a JSON report"], "warnings": []},
        }
    errors = [str(e) for e in body.get("errors") or []]
    warnings = [str(w) for w in body.get("warnings") or []]
    return {
        "status": "unhealthy" if errors else "ok",
        "report": {"errors": errors, "warnings": warnings},
    }


class HealthPoller:
    """Checks every live proxy on an interval and right after each change."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="proxy-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def trigger(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:  # a poller bug must not stop polling; it is logged
                log.exception("proxy health check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.emu.health_interval)
            self._wake.clear()

    async def check_all(self) -> list[Doc]:
        async with self._lock:
            proxies = [p for p in self.emu.store.all("proxy") if not p["deleted"]]
            limit = asyncio.Semaphore(PARALLEL_CHECKS)
            async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_SECONDS, trust_env=False) as client:

                async def check(proxy: Doc) -> tuple[str, dict[str, Any]]:
                    url = proxy.get("url", "")
                    if not url:
                        return proxy["id"], classify("", None)
                    async with limit:
                        try:
                            response = await client.get(f"{url.rstrip('/')}/healthz-report")
                        except httpx.HTTPError as error:
                            return proxy["id"], classify(url, None, type(error).__name__)
                    return proxy["id"], classify(url, response)

                results = await asyncio.gather(*(check(p) for p in proxies))
            updated = []
            for proxy_id, result in results:
                proxy = self.emu.store.get("proxy", proxy_id)
                if proxy is None or proxy["deleted"]:
                    continue
                proxy["status"] = {**result, "checked_at": now_iso()}
                self.emu.store.put("proxy", proxy)
                updated.append(proxy)
            return updated
