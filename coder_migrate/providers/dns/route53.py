"""Amazon Route 53 through boto3: plain record sets, and the shared hostname as geolocation
record sets with a health check per region.

The shared hostname is one logical rrset of type ``GEO`` (the plan, markers, thresholds and
rollback treat it like any other rrset). Each of its records stands for one Route 53 record
set of that name, in a fixed text form so a re-plan compares text with text:

    A eu-west/continent=EU 203.0.113.11 check=https://coder-eu-west.example.com/cem-healthz
    A eu-west/country=IE 203.0.113.11 check=https://coder-eu-west.example.com/cem-healthz
    A primary/default 192.0.2.10

``<region>/<location>`` is the record set's ``SetIdentifier``; the location is its
``GeoLocation`` (``continent=``, ``country=``, or ``default``: ``CountryCode *``); ``check=``
names the Route 53 health check the record set carries, by the URL it probes. When a
region's check fails, Route 53 answers the next larger location that matches, and finally
the default record set: the primary, which has no check.

Health checks are created for the URLs a change needs (tagged ``coder-migrate-owner`` with
the deployment's owner id) before the record sets that use them, and those of this owner
that no record set uses any more are deleted after. Every rrset change is one
``ChangeResourceRecordSets`` batch (atomic): ``CREATE`` for a new rrset and ``DELETE`` with
the record sets exactly as observed, which Route 53 refuses when the rrset is not (or no
longer) so, and ``UPSERT`` for an update, which the plan's own check of the observed rrset
precedes. Credentials come from references or the standard AWS chain; errors name the
operation and the reference, never a key.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from coder_migrate.errors import DnsError
from coder_migrate.providers.dns.base import (
    Capabilities,
    DnsAdapter,
    RRSet,
    RRSetChange,
    absolute,
)

if TYPE_CHECKING:
    import boto3

__all__ = ["GEO_TYPE", "GeoRecord", "Route53Adapter", "check_config", "check_url"]

GEO_TYPE = "GEO"
OWNER_TAG = "coder-migrate-owner"
DEFAULT_LOCATION = "default"
T = TypeVar("T")
_AUTH_CODES = frozenset({
    "InvalidClientTokenId", "SignatureDoesNotMatch", "AccessDenied", "UnrecognizedClientException",
    "InvalidSignatureException", "ExpiredToken", "AccessDeniedException",
})
_OCTAL = re.compile(r"\\(\d{3})")


@dataclass(frozen=True)
class GeoRecord:
    """One geolocation record set of the shared hostname, as one line of a ``GEO`` rrset."""

    rtype: str
    region: str
    location: str
    """``continent=EU``, ``country=IE`` or ``default``."""
    targets: tuple[str, ...]
    check: str = ""
    """URL of the health check the record set carries; empty for none (the default)."""

    @property
    def set_identifier(self) -> str:
        return f"{self.region}/{self.location}"

    def text(self) -> str:
        check = f" check={self.check}" if self.check else ""
        return f"{self.rtype} {self.set_identifier} {','.join(self.targets)}{check}"

    @classmethod
    def parse(cls, line: str) -> GeoRecord:
        parts = line.split(" ")
        if len(parts) not in (3, 4) or "/" not in parts[1]:
            raise DnsError(f"not a geolocation record line: {line!r}")
        region, _, location = parts[1].partition("/")
        check = parts[3].removeprefix("check=") if len(parts) == 4 else ""
        return cls(parts[0], region, location, tuple(parts[2].split(",")), check)

    def geolocation(self) -> dict[str, str]:
        if self.location == DEFAULT_LOCATION:
            return {"CountryCode": "*"}
        kind, _, code = self.location.partition("=")
        return {"ContinentCode": code} if kind == "continent" else {"CountryCode": code}


def location_of(geo: dict[str, str]) -> str:
    if geo.get("CountryCode") == "*":
        return DEFAULT_LOCATION
    if "ContinentCode" in geo:
        return f"continent={geo['ContinentCode']}"
    sub = f"/{geo['SubdivisionCode']}" if "SubdivisionCode" in geo else ""
    return f"country={geo.get('CountryCode', '')}{sub}"


def check_config(url: str, interval: int) -> dict[str, Any]:
    """The Route 53 ``HealthCheckConfig`` that probes *url*."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    config: dict[str, Any] = {
        "Type": "HTTPS" if secure else "HTTP",
        "FullyQualifiedDomainName": parts.hostname or "",
        "Port": parts.port or (443 if secure else 80),
        "ResourcePath": parts.path or "/",
        "RequestInterval": interval,
        "FailureThreshold": 3,
    }
    if secure:
        config["EnableSNI"] = True
    return config


def check_url(config: dict[str, Any]) -> str:
    """The URL a ``HealthCheckConfig`` probes, in the form :func:`check_config` reads."""
    scheme = "https" if config.get("Type", "").startswith("HTTPS") else "http"
    port = int(config.get("Port") or (443 if scheme == "https" else 80))
    default = 443 if scheme == "https" else 80
    shown = "" if port == default else f":{port}"
    host = config.get("FullyQualifiedDomainName") or config.get("IPAddress", "")
    return f"{scheme}://{host}{shown}{config.get('ResourcePath', '/')}"


def _name(text: str) -> str:
    """Route 53 writes ``*`` (and other specials) as octal escapes: ``\\052``."""
    return absolute(_OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text))


class Route53Adapter(DnsAdapter):
    provider: ClassVar[str] = "route53"

    def __init__(
        self, *, zone: str, owner: str, hosted_zone_id: str | None = None,
        session: boto3.session.Session | None = None, endpoint_url: str | None = None,
        credentials_source: str = "the standard AWS credential chain",
        health_check_interval: int = 30,
    ) -> None:
        self.zone = absolute(zone)
        self.owner = owner
        self._zone_id = hosted_zone_id
        self._source = credentials_source
        self._where = endpoint_url or "Route 53"
        self._interval = health_check_interval
        # boto3 loads in a few hundred milliseconds: only inventories on Route 53 pay for it.
        import boto3
        import botocore.config

        session = session or boto3.session.Session()
        # Any: the record sets and health check configs are built as plain dicts here.
        self._client: Any = session.client(
            "route53", endpoint_url=endpoint_url, region_name="us-east-1",
            config=botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"}),
        )

    async def _call(self, operation: str, function: Callable[[], T]) -> T:
        import botocore.exceptions

        try:
            return await asyncio.to_thread(function)
        except botocore.exceptions.NoCredentialsError:
            raise DnsError(
                f"Route 53 {operation}: no AWS credentials from {self._source}; set "
                "coder_dns.route53.profile or access_key_id/secret_access_key references"
            ) from None
        except botocore.exceptions.ClientError as error:
            info = error.response.get("Error", {})
            code, message = info.get("Code", "?"), info.get("Message", "")
            if code in _AUTH_CODES:
                raise DnsError(
                    f"Route 53 at {self._where} refused the credentials from {self._source} "
                    f"({code} on {operation})"
                ) from None
            raise DnsError(f"Route 53 {operation} failed: {code}: {message}") from None
        except botocore.exceptions.BotoCoreError as error:
            raise DnsError(
                f"cannot reach Route 53 at {self._where} for {operation} ({type(error).__name__})"
            ) from None

    async def zone_id(self) -> str:
        if self._zone_id is None:
            answer = await self._call("ListHostedZonesByName", partial(
                self._client.list_hosted_zones_by_name, DNSName=self.zone + ".", MaxItems="1"
            ))
            zones = [z for z in answer.get("HostedZones", ()) if _name(z["Name"]) == self.zone]
            if not zones:
                raise DnsError(f"Route 53 at {self._where} has no hosted zone {self.zone}")
            self._zone_id = zones[0]["Id"].rsplit("/", 1)[-1]
        return self._zone_id

    async def capabilities(self) -> Capabilities:
        return Capabilities(
            provider=self.provider, geolocation=True, client_subnet=True, geoip=True,
        )

    async def _record_sets(self) -> list[dict[str, Any]]:
        zone_id = await self.zone_id()

        def every() -> list[dict[str, Any]]:
            pages = self._client.get_paginator("list_resource_record_sets")
            return [r for page in pages.paginate(HostedZoneId=zone_id)
                    for r in page["ResourceRecordSets"]]

        return await self._call("ListResourceRecordSets", every)

    async def _check_urls(self) -> dict[str, str]:
        """Health check id -> the URL it probes, for every health check of the account."""

        def every() -> dict[str, str]:
            pages = self._client.get_paginator("list_health_checks")
            return {c["Id"]: check_url(c["HealthCheckConfig"])
                    for page in pages.paginate() for c in page["HealthChecks"]}

        return await self._call("ListHealthChecks", every)

    async def observe(self) -> list[RRSet]:
        raw = await self._record_sets()
        urls = await self._check_urls() if any("SetIdentifier" in r for r in raw) else {}
        return _rrsets(raw, urls)

    async def apply(self, changes: Sequence[RRSetChange]) -> None:
        for change in changes:
            if change.key[1] == GEO_TYPE:
                await self._apply_geo(change)
                continue
            # CREATE fails if the rrset exists and DELETE unless it is exactly as given;
            # an update is one UPSERT (the plan checked the rrset just before).
            action = {"create": "CREATE", "update": "UPSERT", "delete": "DELETE"}[change.action]
            record = next(_plain(change.after or change.before))
            await self._change_batch(f"{change.key[1]} {change.key[0]}", [(action, record)])

    async def _change_batch(self, what: str, actions: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if not actions:
            return
        zone_id = await self.zone_id()
        batch = {"Changes": [{"Action": a, "ResourceRecordSet": r} for a, r in actions]}
        try:
            await self._call("ChangeResourceRecordSets", partial(
                self._client.change_resource_record_sets, HostedZoneId=zone_id, ChangeBatch=batch
            ))
        except DnsError as error:
            if "InvalidChangeBatch" in error.message:
                raise DnsError(
                    f"Route 53 refused the change of {what}: the rrset is no longer what the "
                    f"plan saw ({error.message}); plan again"
                ) from None
            raise

    async def _apply_geo(self, change: RRSetChange) -> None:
        """One batch: UPSERT the record sets wanted, DELETE (exactly as they are) those of
        the name no longer wanted; health checks made before, unused ones removed after."""
        name = change.key[0]
        wanted = [GeoRecord.parse(line) for line in (change.after.records if change.after else ())]
        ids = await self._ensure_checks({r.check for r in wanted if r.check})
        current = [r for r in await self._record_sets()
                   if _name(r["Name"]) == name and "SetIdentifier" in r]
        keep = {r.set_identifier for r in wanted}
        ttl = change.after.ttl if change.after else 0
        await self._change_batch(f"{GEO_TYPE} {name}", [
            *(("DELETE", r) for r in current if r["SetIdentifier"] not in keep),
            *(("UPSERT", _geo_record_set(name, ttl, r, ids)) for r in wanted),
        ])
        await self._delete_unused_checks()

    async def _owned_checks(self) -> dict[str, str]:
        """Id -> URL of the health checks tagged with this deployment's owner id."""
        urls = await self._check_urls()
        owned: dict[str, str] = {}
        for check_id, url in urls.items():
            tags = await self._call("ListTagsForResource", partial(
                self._client.list_tags_for_resource, ResourceType="healthcheck",
                ResourceId=check_id,
            ))
            values = {t["Key"]: t["Value"] for t in tags["ResourceTagSet"].get("Tags", ())}
            if values.get(OWNER_TAG) == self.owner:
                owned[check_id] = url
        return owned

    async def _ensure_checks(self, urls: set[str]) -> dict[str, str]:
        """URL -> id of a health check of this owner probing it, created where missing."""
        by_url = {url: check_id for check_id, url in (await self._owned_checks()).items()}
        for url in sorted(urls - set(by_url)):
            config = check_config(url, self._interval)
            created = await self._call("CreateHealthCheck", partial(
                self._client.create_health_check,
                CallerReference=f"coder-migrate-{uuid.uuid4()}", HealthCheckConfig=config,
            ))
            check_id = created["HealthCheck"]["Id"]
            await self._call("ChangeTagsForResource", partial(
                self._client.change_tags_for_resource, ResourceType="healthcheck",
                ResourceId=check_id, AddTags=[
                    {"Key": OWNER_TAG, "Value": self.owner},
                    {"Key": "Name", "Value": f"coder-migrate {url}"[:255]},
                ],
            ))
            by_url[url] = check_id
        return {url: by_url[url] for url in urls}

    async def _delete_unused_checks(self) -> None:
        used = {r.get("HealthCheckId") for r in await self._record_sets()}
        for check_id in sorted(set(await self._owned_checks()) - used):
            await self._call("DeleteHealthCheck", partial(
                self._client.delete_health_check, HealthCheckId=check_id
            ))


def _plain(rrset: RRSet | None) -> Iterator[dict[str, Any]]:
    if rrset is not None:
        yield {"Name": rrset.name + ".", "Type": rrset.type, "TTL": rrset.ttl,
               "ResourceRecords": [{"Value": v} for v in rrset.records]}


def _geo_record_set(name: str, ttl: int, record: GeoRecord, ids: dict[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "Name": name + ".", "Type": record.rtype, "TTL": ttl,
        "SetIdentifier": record.set_identifier, "GeoLocation": record.geolocation(),
        "ResourceRecords": [{"Value": v} for v in record.targets],
    }
    if record.check:
        result["HealthCheckId"] = ids[record.check]
    return result


def _rrsets(raw: Sequence[dict[str, Any]], urls: dict[str, str]) -> list[RRSet]:
    """Route 53 record sets as rrsets: plain ones as they are, those with a set identifier
    grouped per name into one ``GEO`` rrset."""
    plain: list[RRSet] = []
    geo: dict[str, list[str]] = {}
    geo_ttl: dict[str, int] = {}
    for record in raw:
        name, rtype = _name(record["Name"]), record["Type"]
        values = tuple(v["Value"] for v in record.get("ResourceRecords", ()))
        if "AliasTarget" in record:
            values = (f"ALIAS {_name(record['AliasTarget']['DNSName'])}",)
        if "SetIdentifier" not in record:
            plain.append(RRSet(name=name, type=rtype, ttl=record.get("TTL", 0), records=values))
            continue
        region, _, rest = record["SetIdentifier"].partition("/")
        location = location_of(record.get("GeoLocation", {})) if "GeoLocation" in record else rest
        line = GeoRecord(rtype, region, location, tuple(sorted(values)),
                         urls.get(record.get("HealthCheckId", ""), record.get("HealthCheckId", "")))
        geo.setdefault(name, []).append(line.text())
        geo_ttl[name] = record.get("TTL", 0)
    plain.extend(RRSet(name=n, type=GEO_TYPE, ttl=geo_ttl[n], records=tuple(lines))
                 for n, lines in geo.items())
    return plain
