"""What every DNS adapter offers: observe a zone's rrsets, apply rrset changes, say what it can.

The engine speaks only this interface (:class:`DnsAdapter`); PowerDNS, RFC 2136 and zone
files are adapters behind it. Record content is compared as text, so each adapter hands back
content in the server's canonical presentation form (what PowerDNS' API returns, what
dnspython's ``to_text`` prints): a desired rrset that matches the server's copy byte for byte
is unchanged, and a re-plan after an apply is empty.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "Capabilities",
    "DnsAdapter",
    "RRSet",
    "RRSetChange",
    "RRSetKey",
    "absolute",
    "relative_to_zone",
]

RRSetKey = tuple[str, str]
"""``(name, type)``: the identity of an rrset in a zone."""


def absolute(name: str) -> str:
    """The form names take in this package: lowercase, absolute, without the final dot."""
    return name.strip().lower().rstrip(".")


def relative_to_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def _records(value: tuple[str, ...]) -> tuple[str, ...]:
    # An rrset is a set: order and duplicates carry no meaning, so they are normalised away.
    return tuple(sorted(set(value)))


class RRSet(BaseModel):
    """All records of one name and type, with their TTL: what DNS changes atomically."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, AfterValidator(absolute)]
    """Owner name, absolute, lowercase, without the final dot (``*.coder-eu-west.example.com``)."""
    type: Annotated[str, AfterValidator(str.upper)]
    """Record type: A, AAAA, TXT, LUA, NS, ..."""
    ttl: Annotated[int, Field(ge=0)]
    records: Annotated[tuple[str, ...], AfterValidator(_records)]
    """Record contents in presentation form, sorted (TXT content keeps its quotes)."""

    @property
    def key(self) -> RRSetKey:
        return (self.name, self.type)

    def lines(self) -> list[str]:
        """One zone-file-like line per record, for diffs and tables."""
        return [f"{self.name}. {self.ttl} {self.type} {content}" for content in self.records]

    def describe(self) -> str:
        return f"{self.type} {self.name}"


@dataclass(frozen=True)
class RRSetChange:
    """Replace the rrset *before* with *after* (either may be None: create or delete)."""

    before: RRSet | None
    after: RRSet | None

    def __post_init__(self) -> None:
        if self.before is None and self.after is None:
            raise ValueError("an rrset change needs a before or an after")
        if self.before is not None and self.after is not None and self.before.key != self.after.key:
            raise ValueError("before and after of an rrset change must name the same rrset")

    @property
    def key(self) -> RRSetKey:
        rrset = self.after or self.before
        assert rrset is not None
        return rrset.key

    @property
    def action(self) -> Literal["create", "update", "delete"]:
        if self.before is None:
            return "create"
        return "delete" if self.after is None else "update"


@dataclass(frozen=True)
class Capabilities:
    """What an adapter (and, where it can tell, the server behind it) supports."""

    provider: str
    lua_records: bool = False
    """Server-side scripted answers (PowerDNS LUA records): geo routing and health checks."""
    geolocation: bool = False
    """Geolocation record sets with health checks and a default (Route 53)."""
    client_subnet: bool = False
    """The server answers by the EDNS Client Subnet of a query, not only the resolver."""
    geoip: bool = False
    """Country and continent lookups are available to scripted answers (a GeoIP database)."""
    txt_ownership: bool = True
    """Ownership markers can be kept as companion TXT rrsets."""
    atomic_rrset: bool = True
    """Each rrset change is applied all or nothing."""
    conditional_update: bool = False
    """The server itself refuses a change when the rrset is no longer what the plan saw."""

    @property
    def geo_routing(self) -> bool:
        return self.lua_records or self.geolocation


class DnsAdapter(ABC):
    """A zone on some DNS provider. Use as ``async with``; errors are :class:`DnsError`."""

    provider: ClassVar[str]
    zone: str

    @abstractmethod
    async def capabilities(self) -> Capabilities:
        """What this adapter and its server support (PowerDNS asks the server)."""

    @abstractmethod
    async def observe(self) -> list[RRSet]:
        """Every rrset in the zone, as the server has it now."""

    @abstractmethod
    async def apply(self, changes: Sequence[RRSetChange]) -> None:
        """Apply *changes* in order; each one atomically (all records of the rrset or none)."""

    async def check_access(self) -> None:
        """Prove the credentials work, changing nothing; a refusal is a :class:`DnsError`.

        The default is the read :meth:`observe` does: an authenticated (PowerDNS API key) or
        TSIG-signed (RFC 2136 zone transfer) request that a wrong secret makes fail.
        """
        await self.observe()

    async def aclose(self) -> None:  # noqa: B027 - adapters without connections keep it
        """Release connections; the default has none."""

    async def __aenter__(self) -> DnsAdapter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
