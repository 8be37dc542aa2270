"""DNS adapters behind one interface (:class:`DnsAdapter`): PowerDNS, RFC 2136, zone file.

Adding a provider (a cloud DNS such as Route 53 with latency or geolocation records and set
identifiers) means one more :class:`DnsAdapter` subclass, a settings model in
``coder_migrate.inventory.model.DnsSettings`` and a branch in :func:`adapter_for`; the plan,
ownership markers and rollback need nothing new. A provider with geo routing of its own
declares it in :class:`Capabilities` and the desired state picks it up there.
"""

from __future__ import annotations

from pathlib import Path

from coder_migrate.inventory.model import DnsSettings
from coder_migrate.providers.dns.base import (
    Capabilities,
    DnsAdapter,
    RRSet,
    RRSetChange,
    RRSetKey,
)
from coder_migrate.providers.dns.powerdns import PowerDnsAdapter
from coder_migrate.providers.dns.rfc2136 import Rfc2136Adapter
from coder_migrate.providers.dns.zonefile import ZoneFileAdapter

__all__ = [
    "Capabilities",
    "DnsAdapter",
    "PowerDnsAdapter",
    "RRSet",
    "RRSetChange",
    "RRSetKey",
    "Rfc2136Adapter",
    "ZoneFileAdapter",
    "adapter_for",
]


def adapter_for(settings: DnsSettings, *, base: Path | None = None) -> DnsAdapter:
    """The adapter for *settings*; secrets are resolved here (relative files: under *base*)."""
    if settings.provider == "powerdns":
        assert settings.powerdns is not None
        pdns = settings.powerdns
        return PowerDnsAdapter(
            api_url=pdns.api_url,
            api_key=pdns.api_key.resolve(base),
            zone=settings.zone,
            server_id=pdns.server_id,
            key_source=pdns.api_key.describe(),
        )
    if settings.provider == "rfc2136":
        assert settings.rfc2136 is not None
        rfc = settings.rfc2136
        return Rfc2136Adapter(
            server=rfc.server,
            zone=settings.zone,
            tsig_key_name=rfc.tsig_key_name,
            tsig_secret=rfc.tsig_secret.resolve(base),
            tsig_algorithm=rfc.tsig_algorithm,
        )
    assert settings.zonefile is not None
    path = Path(settings.zonefile.path).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return ZoneFileAdapter(path=path, zone=settings.zone, shared_hostname=settings.shared_hostname)
