"""The lab's stand-in for a ``coder-provisioner`` pod (``/opt/coder provisionerd start``):
one connection per replica to the primary's serve endpoint, presenting the pre-shared key from
the pod's env, held open as a real daemon holds its session, and redialled with backoff.

Env (the names the real chart renders): ``CODER_URL``, ``CODER_PROVISIONER_DAEMON_PSK``,
``CODER_PROVISIONERD_TAGS`` (``k=v,k=v``); the lab adds ``CODER_LAB_POD_NAME`` (the daemon's
name, as the real one takes the pod's host name) and ``CODER_LAB_REPLICAS``. The key is never
logged: a refusal logs the primary's status and message only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import aiohttp

__all__ = ["main", "serve_url"]

log = logging.getLogger("coder_migrate.lab.provisionerd")
PSK_HEADER = "Coder-Provisioner-PSK"
MAX_BACKOFF_SECONDS = 5.0


def serve_url(base: str, name: str, tags: str) -> str:
    query = [("provisioner", "terraform"), ("name", name)]
    query += [("tag", item) for item in tags.split(",") if item]
    from urllib.parse import urlencode

    return (f"{base.rstrip('/')}/api/v2/organizations/default/provisionerdaemons/serve?"
            f"{urlencode(query)}")


async def _refusal(session: aiohttp.ClientSession, url: str, psk: str) -> str:
    """The primary's message for a refused dial (the handshake error carries none)."""
    try:
        async with session.get(url, headers={PSK_HEADER: psk}) as response:
            body = await response.json(content_type=None)
            return str(body.get("message", "")) if isinstance(body, dict) else ""
    except (aiohttp.ClientError, OSError, ValueError):
        return ""


async def _daemon(session: aiohttp.ClientSession, url: str, psk: str, name: str) -> None:
    backoff = 0.5
    while True:
        try:
            async with session.ws_connect(url, headers={PSK_HEADER: psk}, heartbeat=20) as ws:
                log.info("%s: connected", name)
                backoff = 0.5
                async for _ in ws:
                    pass
                log.warning("%s: connection closed (%s)", name, ws.close_code)
        except aiohttp.WSServerHandshakeError as error:
            log.warning("%s: refused: %s %s", name, error.status,
                        await _refusal(session, url, psk))
        except (aiohttp.ClientError, OSError) as error:
            log.warning("%s: cannot connect: %s", name, type(error).__name__)
        await asyncio.sleep(backoff)
        backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)


async def run() -> None:
    base = os.environ.get("CODER_URL", "")
    psk = os.environ.get("CODER_PROVISIONER_DAEMON_PSK", "")
    tags = os.environ.get("CODER_PROVISIONERD_TAGS", "")
    pod = os.environ.get("CODER_LAB_POD_NAME", "coder-provisioner-lab")
    replicas = max(1, int(os.environ.get("CODER_LAB_REPLICAS", "1") or 1))
    if not base or not psk:
        raise SystemExit("CODER_URL and CODER_PROVISIONER_DAEMON_PSK must be set")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(_daemon(session, serve_url(base, f"{pod}-{i}", tags),
                                             psk, f"{pod}-{i}"))
                 for i in range(replicas)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stdout)
    asyncio.run(run())


if __name__ == "__main__":
    main()
