"""``status`` of the external provisioners: per region, the daemons the primary lists as
connected (``GET /api/v2/provisionerdaemons``: the region's tags, seen within
:data:`SEEN_SECONDS`) against its replicas, and whether the region's key is the primary's
(compared by fingerprint: a region holding another key is refused by the primary)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coder_migrate.engine.provisioners import provisioner_regions, psk_secret
from coder_migrate.engine.world import Engine, World
from coder_migrate.errors import CoderAPIError
from coder_migrate.inventory.provisioner_model import RESERVED_TAGS
from coder_migrate.providers.coder.models_v2 import ProvisionerDaemon

__all__ = ["SEEN_SECONDS", "provisioner_status"]

SEEN_SECONDS = 90.0
"""A daemon last seen longer ago than this is not counted as connected."""


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
        wanted = region.provisioners.tags
        replicas = region.provisioners.replicas
        connected = sum(
            1 for d in daemons or []
            if {k: v for k, v in d.tags.items() if k not in RESERVED_TAGS} == wanted
            and d.last_seen_at is not None and d.last_seen_at >= cutoff
        )
        state = world.provisioners.regions.get(region.name)
        held = state.secret if state else None
        secret = psk_secret(region)
        problem = why
        shown = f"{'?' if daemons is None else connected}/{replicas} connected"
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
        elif daemons is not None and connected < replicas:
            problem = f"{replicas - connected} of {replicas} provisioners not connected"
        result[region.name] = (shown, problem)
    return result
