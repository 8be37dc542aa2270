"""DNS adapters behind one interface (:class:`DnsAdapter`): PowerDNS, RFC 2136, zone file,
Route 53.

Adding a provider means one more :class:`DnsAdapter` subclass, a settings model in
``coder_migrate.inventory.model.DnsSettings`` and a branch in :func:`adapter_for`; the plan,
ownership markers and rollback need nothing new. A provider with geo routing of its own
declares it in :class:`Capabilities` and the desired state picks it up there.
"""

from __future__ import annotations

from pathlib import Path

from coder_migrate.errors import ConfigError
from coder_migrate.inventory.model import DnsSettings, Topology
from coder_migrate.providers.dns.base import (
    Capabilities,
    DnsAdapter,
    RRSet,
    RRSetChange,
    RRSetKey,
)
from coder_migrate.providers.dns.powerdns import PowerDnsAdapter
from coder_migrate.providers.dns.rfc2136 import Rfc2136Adapter
from coder_migrate.providers.dns.route53 import Route53Adapter
from coder_migrate.providers.dns.zonefile import ZoneFileAdapter

__all__ = [
    "Capabilities",
    "DnsAdapter",
    "PowerDnsAdapter",
    "RRSet",
    "RRSetChange",
    "RRSetKey",
    "Rfc2136Adapter",
    "Route53Adapter",
    "ZoneFileAdapter",
    "adapter_for",
    "open_adapter",
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
    if settings.provider == "route53":
        return _route53(settings, base)
    assert settings.zonefile is not None
    path = Path(settings.zonefile.path).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return ZoneFileAdapter(path=path, zone=settings.zone, shared_hostname=settings.shared_hostname)


def open_adapter(topology: Topology) -> DnsAdapter:
    """The adapter for the inventory's DNS provider, with its secret resolved."""
    base = Path(topology.source) if topology.source else None
    return adapter_for(topology.dns, base=base)


def _route53(settings: DnsSettings, base: Path | None) -> Route53Adapter:
    import boto3
    import botocore.exceptions

    r53 = settings.route53
    assert r53 is not None
    key_id = secret_key = None
    source = "the standard AWS credential chain"
    if r53.profile:
        source += f" (profile {r53.profile})"
    if r53.access_key_id is not None and r53.secret_access_key is not None:
        key_id = r53.access_key_id.resolve(base)
        secret_key = r53.secret_access_key.resolve(base)
        source = f"{r53.access_key_id.describe()} and {r53.secret_access_key.describe()}"
    try:
        session = boto3.session.Session(
            profile_name=r53.profile, aws_access_key_id=key_id, aws_secret_access_key=secret_key
        )
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError(
            f"coder_dns.route53.profile: expected an AWS profile of this machine's AWS "
            f"configuration, found {r53.profile!r}"
        ) from None
    return Route53Adapter(
        zone=settings.zone, owner=settings.shared_hostname, hosted_zone_id=r53.hosted_zone_id,
        session=session,
        endpoint_url=r53.endpoint_url, credentials_source=source,
        health_check_interval=r53.health_check_interval,
    )
