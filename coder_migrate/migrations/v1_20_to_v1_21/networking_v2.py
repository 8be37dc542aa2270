"""``ProviderNetworkingV2``: Networking v2 switched on for a workspace provider (off again on
rollback), so its workspaces connect through the region's satellite."""

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
    change_id,
)
from coder_migrate.engine.guide import Check, Commands, Guide, fixed
from coder_migrate.engine.health import site_gate
from coder_migrate.errors import ApplyError
from coder_migrate.inventory import Region

__all__ = ["NetworkingState", "ProviderNetworkingV2Change"]

KIND = "ProviderNetworkingV2"


class NetworkingState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str
    networking_v2: bool


class ProviderNetworkingV2Change(Change):
    kind: Literal["ProviderNetworkingV2"] = "ProviderNetworkingV2"
    before: NetworkingState | None = None
    after: NetworkingState | None = None

    @classmethod
    def switch(cls, region: str, provider: str, *, on: bool,
               depends_on: tuple[str, ...] = ()) -> ProviderNetworkingV2Change:
        return cls(
            id=change_id(region, KIND, provider), region=region, action=Action.UPDATE,
            target=f"workspace provider {provider} on the primary",
            reason=("switch on Networking v2 so its workspaces connect through the satellite"
                    if on else "switch Networking v2 off again, as it was before the migration"),
            before=NetworkingState(provider=provider, networking_v2=not on),
            after=NetworkingState(provider=provider, networking_v2=on), depends_on=depends_on,
        )

    @property
    def switches_on(self) -> bool:
        return self.after is None or self.after.networking_v2

    async def act(self, ctx: ApplyContext) -> str:
        name = self.after.provider if self.after else ""
        wanted = self.switches_on
        state = "on" if wanted else "off"
        async with ctx.engine.coder_v1() as coder:
            provider = next((p for p in await coder.list_providers() if p.name == name), None)
            if provider is None:
                raise ApplyError(f"{self.region}: workspace provider {name!r} no longer exists")
            if provider.enable_net_v2 == wanted:
                return f"workspace provider {name}: Networking v2 already {state}"
            await coder.set_networking_v2(provider.id, wanted)
        return f"workspace provider {name}: Networking v2 switched {state}"

    def verify(self, ctx: ApplyContext) -> Gate | None:
        # Switched on, the region must stay healthy; switched off (rollback), its satellite
        # is about to go.
        return site_gate(ctx.engine, ctx.site(self.region)) if self.switches_on else None

    @classmethod
    async def inverse(cls, done: Done, ctx: UndoContext) -> Change | None:
        """Switch it off again, unless it was on before or is off already."""

        async def switched() -> dict[str, bool]:
            async with ctx.engine.coder_v1() as coder:
                return {p.name: bool(p.enable_net_v2) for p in await coder.list_providers()}

        was_on = bool((done.snapshot or {}).get("networking_v2", False))
        if was_on or not (await ctx.once("networking-v2", switched)).get(done.name, False):
            return None
        return cls.switch(done.region, done.name, on=False).model_copy(
            update={"id": done.change_id})

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Switch on Networking v2 for the region's workspace providers",
            checks=_checks, estimate=fixed("about 1 s per provider (one API call each)"),
            rollback="`migrate rollback` switches Networking v2 off again for these providers.",
        )


def _checks(c: Commands, region: Region, changes: Sequence[Change]) -> list[Check]:
    names = ", ".join(
        ch.after.provider if isinstance(ch, ProviderNetworkingV2Change) and ch.after
        else ch.target for ch in changes)
    return [
        Check("the primary's dashboard: Manage > Providers",
              f"Networking v2 is enabled for {names}", manual=True),
        Check(c.cli("migrate", "status"), f"{region.name} is at {KIND} or a later step"),
    ]
