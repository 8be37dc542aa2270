"""Servers that take RFC 2136 dynamic updates signed with TSIG, such as BIND 9.

The zone is observed by a TSIG-signed AXFR. Each rrset change is one UPDATE message, which
the server applies atomically, and it carries a prerequisite (RFC 2136 section 2.4): the
rrset must still be exactly what the plan saw (value-dependent "RRset exists"), or absent for
a create. A server that changed underneath therefore refuses the change instead of losing the
other writer's data. Plain record sets only: these servers cannot route by geography.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.zone

from coder_migrate.errors import DnsError
from coder_migrate.providers.dns.base import (
    Capabilities,
    DnsAdapter,
    RRSet,
    RRSetChange,
    absolute,
)

__all__ = ["Rfc2136Adapter"]

T = TypeVar("T")
_TIMEOUT_SECONDS = 10.0


class Rfc2136Adapter(DnsAdapter):
    provider: ClassVar[str] = "rfc2136"

    def __init__(
        self,
        *,
        server: str,
        zone: str,
        tsig_key_name: str,
        tsig_secret: str,
        tsig_algorithm: str = "hmac-sha256",
        timeout: float = _TIMEOUT_SECONDS,
    ) -> None:
        host, _, port = server.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.zone = absolute(zone)
        self._origin = dns.name.from_text(self.zone + ".")
        self._timeout = timeout
        try:
            self._key = dns.tsig.Key(
                dns.name.from_text(tsig_key_name), tsig_secret, algorithm=tsig_algorithm
            )
        except (ValueError, dns.exception.DNSException) as error:
            # The secret itself is never quoted: only the key's name.
            raise DnsError(
                f"TSIG key {tsig_key_name}: the secret is not valid base64 for "
                f"{tsig_algorithm} ({type(error).__name__})"
            ) from None
        self._key_name = tsig_key_name

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    async def capabilities(self) -> Capabilities:
        return Capabilities(provider=self.provider, conditional_update=True)

    async def _call(self, what: str, function: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(function)
        except dns.tsig.PeerError as error:
            raise DnsError(
                f"{self._where} refused TSIG key {self._key_name} on {what} "
                f"({type(error).__name__}): check the key name, algorithm and secret"
            ) from error
        except dns.exception.Timeout as error:
            raise DnsError(f"{self._where}: {what} timed out") from error
        except (OSError, EOFError) as error:
            raise DnsError(
                f"cannot reach DNS server {self._where} for {what} ({type(error).__name__})"
            ) from error
        except dns.exception.DNSException as error:
            raise DnsError(f"{self._where}: {what} failed: {error}") from error

    async def observe(self) -> list[RRSet]:
        def transfer() -> dns.zone.Zone:
            zone = dns.zone.Zone(self._origin, relativize=False)
            query = dns.message.make_query(self._origin, dns.rdatatype.AXFR)
            query.use_tsig(self._key)
            dns.query.inbound_xfr(
                self.host, zone, query=query, port=self.port, timeout=self._timeout,
                lifetime=self._timeout,
            )
            return zone

        zone = await self._call(f"zone transfer of {self.zone}", transfer)
        rrsets = []
        for name, node in zone.nodes.items():
            for rdataset in node.rdatasets:
                rrsets.append(
                    RRSet(
                        name=name.to_text(),
                        type=dns.rdatatype.to_text(rdataset.rdtype),
                        ttl=rdataset.ttl,
                        records=tuple(rd.to_text() for rd in rdataset),
                    )
                )
        return rrsets

    async def apply(self, changes: Sequence[RRSetChange]) -> None:
        for change in changes:
            await self._apply_one(change)

    async def _apply_one(self, change: RRSetChange) -> None:
        name_text, type_text = change.key
        name = dns.name.from_text(name_text + ".")
        rdtype = dns.rdatatype.from_text(type_text)
        update = dns.update.UpdateMessage(self._origin, keyring=self._key)
        if change.before is None:
            update.absent(name, rdtype)
        else:
            # RFC 2136 3.2.4: a value-dependent prerequisite carries TTL 0.
            update.present(name, self._rdataset(change.before, ttl=0))
        if change.after is None:
            update.delete(name, rdtype)
        else:
            update.replace(name, self._rdataset(change.after))
        what = f"update of {change.after.describe() if change.after else change.key[1]} {name_text}"
        response = await self._call(
            what,
            lambda: dns.query.tcp(update, self.host, port=self.port, timeout=self._timeout),
        )
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        if rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN):
            raise DnsError(
                f"{self._where} refused the {change.action} of {type_text} {name_text}: the "
                f"rrset is no longer what the plan saw ({dns.rcode.to_text(rcode)}); plan again"
            )
        raise DnsError(
            f"{self._where} refused the {change.action} of {type_text} {name_text} "
            f"({dns.rcode.to_text(rcode)}); is TSIG key {self._key_name} allowed to update "
            f"zone {self.zone}?"
        )

    @staticmethod
    def _rdataset(rrset: RRSet, ttl: int | None = None) -> dns.rdataset.Rdataset:
        rdtype = dns.rdatatype.from_text(rrset.type)
        try:
            rdatas = [
                dns.rdata.from_text(dns.rdataclass.IN, rdtype, content)
                for content in rrset.records
            ]
        except dns.exception.DNSException as error:
            raise DnsError(f"{rrset.describe()}: record content is not valid: {error}") from error
        return dns.rdataset.from_rdata_list(rrset.ttl if ttl is None else ttl, rdatas)
