"""``SatelliteRegistration``: a v1 region's satellite registered with (or removed from) the
primary.

Apply fetches the key the satellite serves, checks its fingerprint and waits until it is the
key of the release's own Secret: another process may still answer at the access URL for a
while (an old pod of a rollout, a satellite being removed from the same address), and
registering its key would make every signed request of the new satellite fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.engine.change import (
    Action,
    ApplyContext,
    Change,
    Done,
    Gate,
    UndoContext,
)
from coder_migrate.engine.guide import Check, Commands, Guide, command, fixed
from coder_migrate.engine.health import gate_unless_deleted
from coder_migrate.engine.world import Engine
from coder_migrate.errors import ApplyError, CoderAPIError, KubeError
from coder_migrate.inventory import Region
from coder_migrate.poll import attempts
from coder_migrate.providers.coder import CoderV1Client, SatelliteKey
from coder_migrate.providers.coder import satellite_key as keys
from coder_migrate.providers.coder.health import health_url
from coder_migrate.providers.coder.transport import ASK_ONCE

__all__ = [
    "SATELLITE_KEY_SECRET",
    "Registration",
    "SatelliteRegistrationChange",
    "release_key_fingerprint",
    "release_key_pem",
]

SATELLITE_KEY_SECRET = "coder-replica-private-key"  # noqa: S105 - a Secret's name
"""The Secret the Coder v1 chart keeps the satellite's private key in (key ``privateKey``)."""
SATELLITE_KEY_FIELD = "privateKey"
#: A satellite just installed starts within seconds: the key is asked for 0.1 s after the
#: first try, then at twice the pause, up to twice a second (a GET of a public key).
KEY_POLL = 0.5
KEY_POLL_FIRST = 0.1


class Registration(BaseModel):
    """A satellite registration: its name, and the key's fingerprint or where it is fetched."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    fingerprint: str | None = None
    access_url: str | None = None


class SatelliteRegistrationChange(Change):
    kind: Literal["SatelliteRegistration"] = "SatelliteRegistration"
    before: Registration | None = None
    after: Registration | None = None

    async def act(self, ctx: ApplyContext) -> str:
        async with ctx.engine.coder_v1() as coder:
            registered = await coder.find_satellite(self.region)
            if self.action is Action.DELETE:
                if registered is None:
                    return f"satellite {self.region}: already deregistered"
                await coder.delete_satellite(registered.id)
                return f"satellite {self.region}: deregistered"
            region = ctx.engine.topology.region(self.region)
            expected = await release_key_fingerprint(ctx.engine, region)
            served = await _wait_for_key(coder, region.access_url, ctx.gate_timeout, expected)
            computed = keys.fingerprint(served.key)
            if computed != served.fingerprint:
                raise ApplyError(
                    f"satellite {region.name} at {region.access_url} serves fingerprint "
                    f"{served.fingerprint[:16]}... that does not match its key "
                    f"({computed[:16]}...); not registered"
                )
            if registered is not None and registered.fingerprint == computed:
                return f"satellite {region.name}: already registered with key {computed[:16]}..."
            if registered is not None:
                await coder.delete_satellite(registered.id)
            await coder.create_satellite(region.name, served.key)
            return f"satellite {region.name}: registered with key {computed[:16]}..."

    def verify(self, ctx: ApplyContext) -> Gate | None:
        return gate_unless_deleted(self, ctx)

    @classmethod
    async def inverse(cls, done: Done, ctx: UndoContext) -> Change | None:
        """Deregister a satellite the operation registered, while it is registered."""

        async def registered() -> set[str]:
            async with ctx.engine.coder_v1() as coder:
                return {s.name for s in await coder.list_satellites()}

        if done.region not in await ctx.once("satellites", registered):
            return None
        return cls(
            id=done.change_id, region=done.region, action=Action.DELETE,
            target=f"satellite registration {done.region} on the primary",
            reason="deregister the satellite the migration registered", needs_force=True,
            before=Registration(name=done.region),
        )

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Register the satellite with the primary", checks=_checks,
            estimate=fixed("about 1 s: fetch the satellite's key, check its fingerprint, "
                           "register it"),
            rollback="`migrate rollback` deregisters the satellite from the primary (before "
                     "uninstalling it).",
        )


def _checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    base = region.access_url.rstrip("/")
    return [
        Check(c.cli("status", limit=region.name),
              f"exit 0; the {region.name} row shows the release deployed, its pods ready, "
              "the satellite registered and reachable yes"),
        Check(command("curl", "-fsS", health_url(base, "v1")), "HTTP 200 from the satellite"),
    ]


async def release_key_pem(engine: Engine, region: Region) -> str | None:
    """The private key the region's release gave its satellite (the chart's key Secret), or
    ``None`` when there is no such Secret to read."""
    try:
        pem = await engine.site_kube(region).secret_value(
            region.namespace, SATELLITE_KEY_SECRET, SATELLITE_KEY_FIELD
        )
    except KubeError:
        return None
    return pem or None


async def release_key_fingerprint(engine: Engine, region: Region) -> str | None:
    """The fingerprint of :func:`release_key_pem`'s key, or ``None`` when there is none."""
    pem = await release_key_pem(engine, region)
    if pem is None:
        return None
    try:
        return keys.fingerprint(keys.public_key_pem(pem))
    except ValueError:
        return None


async def _wait_for_key(
    coder: CoderV1Client, access_url: str, timeout: float, expected: str | None
) -> SatelliteKey:
    """The key served at *access_url*; with *expected*, only once it is that key."""
    async for attempt in attempts(timeout, interval=KEY_POLL, first=KEY_POLL_FIRST):
        try:
            # Each poll asks once (ASK_ONCE): the client's own retries, up to 15 s of backoff
            # for a refused connection, would keep a satellite that came up meanwhile unseen.
            served = await coder.fetch_satellite_key(access_url, retry=ASK_ONCE)
        except CoderAPIError:
            if attempt.last:
                raise
            continue
        fingerprint = keys.fingerprint(served.key)
        if expected is None or fingerprint == expected:
            return served
        if attempt.last:
            raise ApplyError(
                f"{access_url} serves key {fingerprint[:16]}..., not the "
                f"key {expected[:16]}... of this release (Secret {SATELLITE_KEY_SECRET}): "
                "another process answers at this access URL; not registered"
            )
    raise AssertionError("attempts() ends with a last attempt")
