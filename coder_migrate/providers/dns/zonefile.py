"""A zone file for people who run DNS by hand (provider ``zonefile``).

The file is the state: observing parses it (a missing file is an empty zone), applying
changes re-renders the whole file from ``templates/dns/zone.j2`` and replaces it atomically.
Records someone else wrote into the file (SOA, NS, anything without our marker) are parsed
and written back unchanged; comments are not kept. Records are grouped by host name in the
layout of the seed: the shared hostname first, then each deployment's name and wildcard.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import dns.exception
import dns.rdatatype
import dns.zone
import jinja2

from coder_migrate.errors import DnsError
from coder_migrate.providers.dns.base import (
    Capabilities,
    DnsAdapter,
    RRSet,
    RRSetChange,
    RRSetKey,
    absolute,
)

__all__ = ["ZoneFileAdapter", "render_zone"]

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("coder_migrate", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - a zone file, not HTML
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_TEMPLATE = "dns/zone.j2"
_MARKER_PREFIX = "_coder-migrate-"
_APEX_TYPES = ("SOA", "NS")


@dataclass(frozen=True)
class _Line:
    name: str
    ttl: int
    type: str
    content: str


@dataclass(frozen=True)
class _Group:
    title: str
    lines: tuple[_Line, ...]


def _host_of(name: str) -> str:
    """The host a record belongs with: markers and wildcards sit with their host."""
    first, _, rest = name.partition(".")
    if (first.startswith(_MARKER_PREFIX) or first == "*") and rest:
        return rest
    return name


def render_zone(zone: str, shared_hostname: str, rrsets: Sequence[RRSet]) -> str:
    """The zone file text for *rrsets*, grouped by host, deterministic for the same input."""
    groups: dict[str, list[RRSet]] = {}
    for rrset in rrsets:
        groups.setdefault(_host_of(rrset.name), []).append(rrset)

    def group_order(host: str) -> tuple[int, str]:
        if host == zone:
            return (0, host)
        return (1, "") if host == shared_hostname else (2, host)

    def rrset_order(rrset: RRSet) -> tuple[int, str, str]:
        if rrset.type in _APEX_TYPES:
            return (_APEX_TYPES.index(rrset.type), rrset.name, rrset.type)
        marker = rrset.name.startswith(_MARKER_PREFIX)
        return (3 if marker else 2, rrset.name, rrset.type)

    rendered: list[_Group] = []
    for host in sorted(groups, key=group_order):
        lines = tuple(
            _Line(rrset.name + ".", rrset.ttl, rrset.type, content)
            for rrset in sorted(groups[host], key=rrset_order)
            for content in rrset.records
        )
        if host == zone:
            title = f"{host}: the zone apex"
        elif host == shared_hostname:
            title = f"{host}: every developer (all deployments)"
        else:
            title = host
        rendered.append(_Group(title, lines))
    width = max((len(line.name) for group in rendered for line in group.lines), default=0)
    return _ENVIRONMENT.get_template(_TEMPLATE).render(
        zone=zone, shared_hostname=shared_hostname, groups=rendered, width=width
    )


class ZoneFileAdapter(DnsAdapter):
    provider: ClassVar[str] = "zonefile"

    def __init__(self, *, path: Path, zone: str, shared_hostname: str) -> None:
        self.path = path
        self.zone = absolute(zone)
        self.shared_hostname = absolute(shared_hostname)

    async def capabilities(self) -> Capabilities:
        return Capabilities(provider=self.provider)

    def _read(self) -> list[RRSet]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as error:
            raise DnsError(f"zone file {self.path} cannot be read: {error.strerror}") from None
        try:
            zone = dns.zone.from_text(
                text, origin=self.zone + ".", relativize=False, check_origin=False,
                filename=str(self.path),
            )
        except dns.exception.DNSException as error:
            raise DnsError(f"zone file {self.path} is not a valid zone file: {error}") from None
        return [
            RRSet(
                name=name.to_text(),
                type=dns.rdatatype.to_text(rdataset.rdtype),
                ttl=rdataset.ttl,
                records=tuple(rd.to_text() for rd in rdataset),
            )
            for name, node in zone.nodes.items()
            for rdataset in node.rdatasets
        ]

    async def observe(self) -> list[RRSet]:
        return await asyncio.to_thread(self._read)

    async def check_access(self) -> None:
        """The file is readable and valid, and its directory (or the nearest existing parent
        :meth:`apply` would create it under) takes new files: the file is replaced by a
        rename, so the directory's permission is what counts."""
        await self.observe()
        await asyncio.to_thread(self._check_writable)

    def _check_writable(self) -> None:
        directory = self.path.parent
        while not directory.exists() and directory != directory.parent:
            directory = directory.parent
        if not os.access(directory, os.W_OK | os.X_OK):
            raise DnsError(f"zone file {self.path} cannot be written: directory {directory} "
                           "is not writable for this user")

    def _write(self, changes: Sequence[RRSetChange]) -> None:
        state: dict[RRSetKey, RRSet] = {rrset.key: rrset for rrset in self._read()}
        for change in changes:
            if change.after is None:
                state.pop(change.key, None)
            else:
                state[change.key] = change.after
        text = render_zone(self.zone, self.shared_hostname, list(state.values()))
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            Path(temporary).replace(self.path)
        except OSError as error:
            raise DnsError(f"zone file {self.path} cannot be written: {error.strerror}") from None

    async def apply(self, changes: Sequence[RRSetChange]) -> None:
        # The whole file is replaced at once, so every change in the call lands together.
        await asyncio.to_thread(self._write, changes)
