"""``status`` of the external provisioners: per region, the daemons the primary lists as
connected (``GET /api/v2/provisionerdaemons``: the region's tags, seen within
:data:`SEEN_SECONDS`) against its replicas, and whether the region's key is the primary's
(compared by fingerprint: a region holding another key is refused by the primary).

The same count is apply's gate after a region's provisioner release is installed or rolled
(:func:`connected_gate`): the wave waits until the primary lists the region's daemons seen
since the change."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from coder_migrate.engine.change import Gate
from coder_migrate.engine.provisioners import provisioner_regions, psk_secret
from coder_migrate.engine.world import Engine, World
from coder_migrate.errors import CoderAPIError
from coder_migrate.inventory import Primary, Region
from coder_migrate.inventory.provisioner_model import RESERVED_TAGS
from coder_migrate.providers.coder.models_v2 import ProvisionerDaemon

__all__ = ["SEEN_SECONDS", "connected", "connected_gate", "provisioner_status"]

SEEN_SECONDS = 90.0
"""A daemon last seen longer ago than this is not counted as connected."""


def connected(daemons: Sequence[ProvisionerDaemon], region: Region, since: datetime) -> int:
    """How many of *daemons* serve exactly *region*'s tags and were seen at *since* or later."""
    assert region.provisioners is not None
    wanted = region.provisioners.tags
    return sum(
        1 for d in daemons
        if {k: v for k, v in d.tags.items() if k not in RESERVED_TAGS} == wanted
        and d.last_seen_at is not None and d.last_seen_at >= since
    )


def connected_gate(engine: Engine, site: Primary | Region) -> Gate:
    """Met when the primary lists as many of *site*'s daemons as its replicas, seen since the
    region's changes were done: the gate is made before the changes run (gates start as
    soon as their site's changes are done), so that moment is its first check."""
    assert isinstance(site, Region) and site.provisioners is not None
    region = site
    provisioners = site.provisioners
    tags = ",".join(f"{k}={v}" for k, v in sorted(provisioners.tags.items())) or "(none)"
    first_check: list[datetime] = []

    async def check() -> str:
        if not first_check:
            first_check.append(datetime.now(UTC))
        since = first_check[0]
        try:
            async with engine.coder_v2() as coder:
                daemons = await coder.provisioner_daemons()
        except CoderAPIError as error:
            return f"the primary does not list its provisioners: {error}"
        seen = connected(daemons, region, since)
        if seen >= provisioners.replicas:
            return ""
        return (f"the primary lists {seen} of {provisioners.replicas} provisioner daemons "
                f"(replicas) with tags {tags} connected since "
                f"{since.strftime('%H:%M:%S')} UTC")

    return Gate(key=f"provisioners/{site.name}", site=site.name, check=check)


async def provisioner_status(engine: Engine, world: World) -> dict[str, tuple[str, str]]:
    """Per region with provisioners: (``<connected>/<replicas> connected``, the problem or
    "")."""
    regions = [r for r in provisioner_regions(engine.topology) if r.name in world.sites]
    if not regions or world.provisioners is None:
        return {}
    daemons: list[ProvisionerDaemon] | None = None
    why = ""
    try:
        async with engine.coder_v2() as coder:
            daemons = await coder.provisioner_daemons()
    except CoderAPIError as error:
        why = f"the primary does not list its provisioners: {error}"
    cutoff = datetime.now(UTC) - timedelta(seconds=SEEN_SECONDS)
    result: dict[str, tuple[str, str]] = {}
    primary = world.provisioners.primary
    for region in regions:
        assert region.provisioners is not None
        replicas = region.provisioners.replicas
        count = connected(daemons or [], region, cutoff)
        state = world.provisioners.regions.get(region.name)
        held = state.secret if state else None
        secret = psk_secret(region)
        problem = why
        shown = f"{'?' if daemons is None else count}/{replicas} connected"
        if held is None:
            problem = f"Secret {secret} has no key psk: its provisioners cannot start"
            shown = "no key"
        elif primary is None:
            problem = "the primary has no provisioner key"
        elif held != primary:
            # A daemon seen lately may be one that was refused since: the count says nothing.
            problem = (f"the key in Secret {secret} ({held}) is not the primary's ({primary}): "
                       "the primary refuses its provisioners")
            shown = "key differs"
        elif daemons is not None and count < replicas:
            problem = f"{replicas - count} of {replicas} provisioners not connected"
        result[region.name] = (shown, problem)
    return result
