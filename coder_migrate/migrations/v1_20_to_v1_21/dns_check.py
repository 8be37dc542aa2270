"""``DnsCheck``: the authoritative servers asked as a region's test clients would, after the
region's records changed (its own names), or for every region with the shared name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.dns.check import check_dns, check_servers, ecs_query, expectations
from coder_migrate.dns.rrset_change import open_adapter, shared_dns_checks
from coder_migrate.engine.change import (
    Action,
    ApplyContext,
    Change,
    Gate,
    change_id,
)
from coder_migrate.engine.guide import Check, Commands, Guide
from coder_migrate.engine.health import site_gate
from coder_migrate.engine.world import Engine
from coder_migrate.errors import ApplyError, DnsError
from coder_migrate.inventory import Region
from coder_migrate.poll import attempts

__all__ = ["DNS_CHECK_WAIT", "DnsCheckChange", "DnsCheckSpec"]

DNS_CHECK_WAIT = 30.0
"""Seconds a DNS check may wait for right answers: PowerDNS LUA health checks run every 5 s
and start at a record's first query."""
DNS_CHECK_POLL = 1.0


class DnsCheckSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    regions: list[str]
    shared: bool


class DnsCheckChange(Change):
    kind: Literal["DnsCheck"] = "DnsCheck"
    IRREVERSIBLE = "it only asks the authoritative servers"
    after: DnsCheckSpec | None = None

    @classmethod
    def of(cls, site: str, regions: Sequence[str], *, shared: bool,
           depends_on: tuple[str, ...], why: str) -> DnsCheckChange:
        what = "every region's names and the shared name" if shared else "its own names"
        return cls(
            id=change_id(site, "DnsCheck", "answers"), region=site, action=Action.ACT,
            target=f"DNS answers for {', '.join(regions)}",
            reason=f"ask the authoritative servers as the region's test clients would ({what}; "
                   f"{why})",
            after=DnsCheckSpec(regions=list(regions), shared=shared), depends_on=depends_on,
        )

    async def act(self, ctx: ApplyContext) -> str:
        """Wrong answers after a bounded wait stop the wave."""
        regions = list(self.after.regions) if self.after else []
        try:
            if self.after is not None and self.after.shared:
                report = await check_dns(ctx.engine.topology, limit=regions, wait=DNS_CHECK_WAIT)
                report.raise_if_failed()
                return (f"dns check: {len(report.results)} answer(s) right for "
                        f"{', '.join(regions)} in {report.seconds:.1f} s")
            asked = await _check_own_names(ctx.engine, regions)
        except DnsError as error:
            raise ApplyError(
                f"{self.region}: DNS does not answer as planned after pointing the records at "
                f"the satellite ({error}); look at `coder-migrate dns check -i INVENTORY` for "
                f"{', '.join(regions)}, fix the zone, then run `migrate apply` again (or roll "
                "the region back)"
            ) from None
        return f"dns check: {asked} answer(s) right for the own names of {', '.join(regions)}"

    def verify(self, ctx: ApplyContext) -> Gate | None:
        if self.after is not None and self.after.shared:
            return None
        return site_gate(ctx.engine, ctx.site(self.region))

    @classmethod
    def guide(cls) -> Guide:
        return Guide(
            title="Check the region's DNS answers", checks=_checks,
            estimate=lambda _: ("a few seconds; waits up to "
                                f"{DNS_CHECK_WAIT:.0f} s for PowerDNS health checks to settle"),
            rollback="Nothing to undo: it only asks the authoritative servers.",
            shared_title="Check every region's DNS answers, the shared name included",
            shared_checks=shared_dns_checks,
        )


def _checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    return [Check(c.cli("dns", "check", limit=region.name),
                  f"exit 0; every row for {region.name} ok (answers are the satellite's "
                  f"addresses: {', '.join(region.dns_targets) or 'none listed'})")]


async def _check_own_names(engine: Engine, regions: Sequence[str]) -> int:
    """The regions' own and wildcard names (not the shared one, written in the last wave)."""
    topology = engine.topology
    servers = check_servers(topology)
    async with open_adapter(topology) as adapter:
        capabilities = await adapter.capabilities()
    wanted = [e for e in expectations(topology, capabilities, regions=set(regions))
              if e.name != topology.dns.shared_hostname]
    async for attempt in attempts(DNS_CHECK_WAIT, interval=DNS_CHECK_POLL):
        wrong = []
        for expectation in wanted:
            for server in servers:
                got = await ecs_query(server, expectation.name, expectation.client_subnet,
                                      expectation.rdtype)
                if got != expectation.expected:
                    wrong.append(f"{server} answered {expectation.rdtype} {expectation.name} "
                                 f"to {expectation.client_subnet} with "
                                 f"{', '.join(got) or 'nothing'}, expected "
                                 f"{', '.join(expectation.expected)}")
        if not wrong:
            return len(wanted) * len(servers)
        if attempt.last:
            raise DnsError(f"{len(wrong)} answer(s) wrong within {DNS_CHECK_WAIT:.0f} s "
                           f"(first: {wrong[0]})")
    raise AssertionError("attempts() ends with a last attempt")
