"""Registering a satellite waits for the key it serves: a satellite that comes up while apply
waits is seen within about half a second, each poll asking once (no client backoff hidden in
a poll: a refused connection would otherwise be retried for up to 15 s)."""

from __future__ import annotations

import asyncio
import time

from coder_migrate.engine.kinds.registration import KEY_POLL, _wait_for_key
from coder_migrate.errors import CoderUnavailable
from coder_migrate.providers.coder import SatelliteKey
from coder_migrate.providers.coder import satellite_key as keys
from coder_migrate.providers.coder.transport import RetryPolicy

PUBLIC = keys.public_key_pem(keys.generate_private_key_pem())


class _Satellite:
    """Refuses connections until *up_after* seconds after the first request."""

    def __init__(self, up_after: float) -> None:
        self.up_after = up_after
        self.first: float | None = None
        self.policies: list[RetryPolicy | None] = []

    async def fetch_satellite_key(
        self, access_url: str, *, retry: RetryPolicy | None = None
    ) -> SatelliteKey:
        now = time.monotonic()
        self.first = now if self.first is None else self.first
        self.policies.append(retry)
        if now - self.first < self.up_after:
            raise CoderUnavailable("could not reach the satellite (ConnectError)")
        return SatelliteKey(key=PUBLIC, fingerprint=keys.fingerprint(PUBLIC))


def test_a_satellite_that_comes_up_during_the_wait_is_seen_soon_each_poll_asking_once() -> None:
    satellite = _Satellite(up_after=1.2)
    started = time.monotonic()
    served = asyncio.run(
        _wait_for_key(satellite, "http://127.0.0.1:9", 30.0, keys.fingerprint(PUBLIC))  # type: ignore[arg-type]
    )
    waited = time.monotonic() - started
    assert served.key == PUBLIC
    # Up at 1.2 s; polled at 0, 0.1, 0.3, 0.7, 1.2 (+ scheduling), then every KEY_POLL.
    assert 1.2 <= waited < 1.2 + KEY_POLL + 0.5, waited
    assert len(satellite.policies) >= 4
    assert all(p is not None and p.attempts == 1 for p in satellite.policies)
