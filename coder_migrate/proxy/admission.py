"""Who a client is and whether it may hold another connection or buffer another byte.

- :class:`ClientAddresses`: the client address as seen after the load balancers named in
  ``CODER_PROXY_TRUSTED_ORIGINS``: their PROXY protocol header (v1 or v2) when enabled, or
  the rightmost untrusted address of the trusted header (``X-Forwarded-For``). Anything a
  connection from elsewhere sends is ignored, so a client cannot choose its own key.
- :class:`ConnectionCaps`: a global connection cap and a per-client cap on that key.
- :class:`BufferBudget`: bytes held in the proxy's own buffers across all connections;
  over the budget, connections that would buffer more stop reading until it drains.

All pure: no sockets, no clock (the unit tests drive them directly).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterable
from ipaddress import IPv4Network, IPv6Network

__all__ = [
    "PROXY_V2_SIGNATURE",
    "BufferBudget",
    "ClientAddresses",
    "ConnectionCaps",
    "ProxyHeaderError",
    "parse_proxy_header",
]

Network = IPv4Network | IPv6Network
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_PROXY_V1_LIMIT = 107  # the longest v1 line, CRLF included (haproxy's proxy-protocol.txt)


class ProxyHeaderError(ValueError):
    """A trusted load balancer sent a PROXY header the proxy cannot read."""


def _v1(data: bytes) -> tuple[str | None, int] | None:
    end = data.find(b"\r\n", 0, _PROXY_V1_LIMIT)
    if end < 0:
        if len(data) >= _PROXY_V1_LIMIT:
            raise ProxyHeaderError("PROXY v1 line too long")
        return None
    fields = data[:end].split(b" ")
    if fields[1:2] == [b"UNKNOWN"]:
        return "", end + 2
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("malformed PROXY v1 line")
    try:
        source = ipaddress.ip_address(fields[2].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProxyHeaderError("malformed PROXY v1 address") from None
    return str(source), end + 2


def _v2(data: bytes) -> tuple[str | None, int] | None:
    if len(data) < 16:
        return None
    version_command, family, length = struct.unpack("!BBH", data[12:16])
    if version_command >> 4 != 2:
        raise ProxyHeaderError("unsupported PROXY protocol version")
    if len(data) < 16 + length:
        return None
    end = 16 + length
    if version_command & 0x0F == 0:  # LOCAL: the balancer's own health check
        return "", end
    address_family = family >> 4
    if address_family == 1 and length >= 12:
        return str(ipaddress.IPv4Address(data[16:20])), end
    if address_family == 2 and length >= 36:
        return str(ipaddress.IPv6Address(data[16:32])), end
    return "", end


def parse_proxy_header(data: bytes) -> tuple[str | None, int] | None:
    """``(client address, header length)`` from the start of ``data``; ``None`` when more
    bytes are needed. The address is ``""`` for LOCAL/UNKNOWN (use the peer's)."""
    if data.startswith(PROXY_V2_SIGNATURE[: len(data)]) and data[:1] == b"\r":
        if len(data) < len(PROXY_V2_SIGNATURE):
            return None
        return _v2(data)
    if b"PROXY "[: len(data)] == data[:6]:
        if len(data) < 6:
            return None
        return _v1(data)
    raise ProxyHeaderError("a trusted origin sent no PROXY header")


class ClientAddresses:
    """Turns a peer address (and what a trusted balancer says) into the client's address."""

    def __init__(
        self,
        trusted: Iterable[Network] = (),
        *,
        header: bytes = b"x-forwarded-for",
        proxy_protocol: bool = False,
    ) -> None:
        self.trusted = tuple(trusted)
        self.header = header.lower()
        self.proxy_protocol = proxy_protocol and bool(self.trusted)
        self._verdicts: dict[str, bool] = {}

    def is_trusted(self, address: str) -> bool:
        verdict = self._verdicts.get(address)
        if verdict is None:
            if not self.trusted:
                return False
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                verdict = False
            else:
                verdict = any(ip in network for network in self.trusted)
            if len(self._verdicts) > 4096:
                self._verdicts.clear()
            self._verdicts[address] = verdict
        return verdict

    def from_header(self, peer: str, headers: list[tuple[bytes, bytes]]) -> str:
        """The rightmost address of the trusted header that is not a trusted balancer;
        ``peer`` itself when the peer is not trusted or the header says nothing usable."""
        if not self.is_trusted(peer):
            return peer
        values = [value for name, value in headers if name.lower() == self.header]
        hops = [h.strip().decode("latin-1") for v in values for h in v.split(b",")]
        for hop in reversed(hops):
            try:
                address = str(ipaddress.ip_address(hop.strip("[]")))
            except ValueError:
                return peer  # garbage in a trusted header: key on the balancer
            if not self.is_trusted(address):
                return address
        return peer


class ConnectionCaps:
    """A global cap on open connections and a cap per client key."""

    def __init__(self, *, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open = 0
        self.by_client: dict[str, int] = {}

    def admit(self, key: str, *, exempt: bool = False) -> bool:
        """Count a new connection for ``key``; ``False`` (nothing counted) when over a cap.
        ``exempt`` skips the per-client cap (a trusted balancer before its client is known)."""
        if self.open >= self.total:
            return False
        count = self.by_client.get(key, 0)
        if not exempt and count >= self.per_client:
            return False
        self.open += 1
        self.by_client[key] = count + 1
        return True

    def release(self, key: str) -> None:
        self.open -= 1
        count = self.by_client.get(key, 1) - 1
        if count > 0:
            self.by_client[key] = count
        else:
            self.by_client.pop(key, None)

    def rekey(self, old: str, new: str) -> bool:
        """Move a counted connection from ``old`` to ``new``; ``False`` (still counted on
        ``old``) when ``new`` is at its cap."""
        if old == new:
            return True
        if self.by_client.get(new, 0) >= self.per_client:
            return False
        self.release(old)
        self.open += 1
        self.by_client[new] = self.by_client.get(new, 0) + 1
        return True


class BufferBudget:
    """Bytes the proxy holds in its own buffers, with back-pressure above ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiting: dict[int, Callable[[], None]] = {}

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.peak:
            self.peak = self.used

    def give(self, size: int) -> None:
        self.used -= size
        if self._waiting and self.used < self.limit:
            waiting, self._waiting = self._waiting, {}
            for resume in waiting.values():
                resume()

    def wait(self, owner: object, resume: Callable[[], None]) -> None:
        """Call ``resume`` once the budget has room again."""
        self._waiting[id(owner)] = resume

    def forget(self, owner: object) -> None:
        self._waiting.pop(id(owner), None)
