"""The typed, frozen model of an inventory: a :class:`Topology`.

Field names are the inventory variable names without their ``coder_`` prefix; the loader
does that mapping. Every rule lives here, once: field types and constraints for single
values, and the validators of :class:`Topology` for rules that span fields or hosts. The
Ansible role ``inventory_validate`` runs this same model (through the
``coder_migrate.toolkit.inventory`` module) and its ``meta/argument_specs.yml`` is generated
from it (:mod:`coder_migrate.inventory.argspec`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from coder_migrate import sensitive
from coder_migrate.errors import SecretError
from coder_migrate.inventory.vault import VAULT_KEY, decrypt

__all__ = [
    "ChartRef",
    "Database",
    "DnsSettings",
    "Geo",
    "LoadBalancer",
    "PowerDnsSettings",
    "Primary",
    "Provisioners",
    "Region",
    "Rfc2136Settings",
    "Route53Settings",
    "SecretRef",
    "SecretStore",
    "TestWorkspace",
    "TlsSecrets",
    "Topology",
    "WorkspaceProvider",
    "ZoneFileSettings",
]

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS_NAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")
_K8S_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONTINENTS = ("AF", "AN", "AS", "EU", "NA", "OC", "SA")


def _frozen() -> ConfigDict:
    return ConfigDict(
        frozen=True, extra="forbid", str_strip_whitespace=True, use_attribute_docstrings=True
    )


def _dns_name(value: str) -> str:
    name = value.lower().rstrip(".")
    if not _DNS_NAME_RE.match(name) or len(name) > 253:
        raise ValueError(f"a DNS name such as coder.example.com, found {value!r}")
    return name


def _k8s_name(value: str) -> str:
    if not _K8S_NAME_RE.match(value) or len(value) > 63:
        raise ValueError(
            f"a Kubernetes name (lowercase letters, digits and '-', at most 63), found {value!r}"
        )
    return value


def _base_url(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:  # an unclosed [IPv6] literal
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"an absolute http(s) URL such as https://coder.example.com, found {value!r}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"a URL without a path, query or fragment, found {value!r}")
    if parts.username or parts.password:
        raise ValueError("a URL without credentials in it (found a user or password)")
    if ":" in parts.netloc.rpartition("]")[2] and not _port(parts):
        raise ValueError(f"a URL whose port is a number from 1 to 65535, found {value!r}")
    if not _is_ip(parts.hostname) and not _DNS_NAME_RE.match(parts.hostname):
        raise ValueError(
            "a URL whose host is an IP address or a DNS name of ASCII letters, digits, '-' "
            f"and '.' (an internationalised name in its xn-- form), found {value!r}"
        )
    return value.rstrip("/")


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _wildcard(value: str) -> str:
    if not value.startswith("*."):
        raise ValueError(f"a wildcard host of the form '*.<domain>', found {value!r}")
    return "*." + _dns_name(value[2:])


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"an IPv4 or IPv6 address, found {value!r}") from None


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise ValueError(
            f"a subnet in CIDR form such as 198.51.100.0/24, found {value!r}"
        ) from None


def _host_port(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"host:port such as 192.0.2.53:53, found {value!r}")
    return value


def _country(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{2}", value):
        raise ValueError(f"an ISO 3166 alpha-2 country code such as DE, found {value!r}")
    return value


def _no_template(value: Any) -> Any:
    # ansible-inventory --list does not render Jinja, so a template would reach us verbatim.
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        raise ValueError("a literal value (coder-migrate reads the inventory without templating)")
    return value


DnsName = Annotated[str, AfterValidator(_dns_name)]
K8sName = Annotated[str, AfterValidator(_k8s_name)]
BaseUrl = Annotated[str, AfterValidator(_base_url)]
WildcardHost = Annotated[str, AfterValidator(_wildcard)]
IpAddress = Annotated[str, AfterValidator(_ip)]
Subnet = Annotated[str, AfterValidator(_network)]
HostPort = Annotated[str, AfterValidator(_host_port)]
Country = Annotated[str, AfterValidator(_country)]
Literal_ = Annotated[str, BeforeValidator(_no_template)]


def _reject_literal_secret(value: Any) -> Any:
    if isinstance(value, Mapping) and set(value) == {VAULT_KEY}:
        # ``!vault`` as ansible-inventory --list writes it: decrypted only when resolved.
        return {"vault": value[VAULT_KEY]}
    if isinstance(value, str | int | float):
        if isinstance(value, str):
            sensitive.register(value)  # refused, and scrubbed wherever else it shows up
        # The value itself is never echoed: it may be a live credential.
        raise ValueError(
            "a secret reference {env: NAME}, {file: PATH} or a !vault value, found a literal "
            "value (not shown)"
        )
    return value


def _environment_name(value: str) -> str:
    # A credential pasted where the variable's name goes is never echoed, and refused:
    # names are upper case by convention, and a name does not look like key material.
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", value):
        sensitive.register(value)
        raise ValueError(
            "the name of an environment variable (upper-case letters, digits and '_'), "
            "found something else (not shown: it may be the secret itself)"
        )
    if len(value) >= 16 and "_" not in value and any(c.isdigit() for c in value):
        sensitive.register(value)
        raise ValueError(
            "the name of an environment variable, found a value that looks like the secret "
            "itself (not shown)"
        )
    return value


class SecretRef(BaseModel):
    """Where a secret lives: an environment variable, a file, or an ansible-vault encrypted
    value. Never the secret itself."""

    model_config = _frozen()

    env: Annotated[str, AfterValidator(_environment_name)] | None = None
    """Name of the environment variable that holds the secret."""
    file: str | None = None
    """File that holds the secret; '~' is expanded, a relative path is relative to the
    inventory directory; it must not be readable by others (chmod 600)."""
    vault: str | None = None
    """An ansible-vault encrypted value, written `!vault |` (ansible-vault encrypt_string);
    decrypted only when the secret is used."""

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if sum(v is not None for v in (self.env, self.file, self.vault)) != 1:
            raise ValueError("exactly one of env, file or a !vault value")
        return self

    def describe(self) -> str:
        if self.env is not None:
            return f"env {self.env}"
        if self.file is not None:
            return f"file {self.file}"
        return "an ansible-vault encrypted value (!vault) in the inventory"

    def path(self, base: Path | None = None) -> Path | None:
        """The secret file, '~' expanded and relative to *base* (the inventory directory)."""
        if self.file is None:
            return None
        path = Path(self.file).expanduser()
        return base / path if base is not None and not path.is_absolute() else path

    def resolve(self, base: Path | None = None) -> str:
        """Return the secret's value, registered with :mod:`coder_migrate.sensitive`; raise
        :class:`SecretError` naming only the reference."""
        if self.vault is not None:
            value = decrypt(self.vault, "the !vault secret").strip()
            where = "the !vault value"
        elif self.env is not None:
            value = os.environ.get(self.env, "").strip()
            where = f"environment variable {self.env}"
            if not value:
                raise SecretError(f"{where} is not set or empty")
        else:
            path = self.path(base)
            assert path is not None
            where = f"secret file {path}"
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as error:
                raise SecretError(f"{where} cannot be read: {error.strerror}") from None
            if not value:
                raise SecretError(f"{where} is empty")
        sensitive.register(value)
        if len(value) < sensitive.MIN_LENGTH:
            raise SecretError(
                f"{where} holds fewer than {sensitive.MIN_LENGTH} characters, too short to be "
                "told apart from ordinary output"
            )
        return value


Secret = Annotated[SecretRef, BeforeValidator(_reject_literal_secret)]


class ChartRef(BaseModel):
    """A Helm chart: repository URL (or OCI/local path), chart name, version."""

    model_config = _frozen()

    repo: Literal_
    """Chart repository URL (https://helm.coder.com), an oci:// reference or a local path."""
    name: Annotated[Literal_, Field(min_length=1)]
    """Chart name in the repository (coder, workspace-provider)."""
    version: Annotated[Literal_, Field(min_length=1)]
    """Exact chart version to install."""


class TlsSecrets(BaseModel):
    """Kubernetes TLS secrets (``tls.crt``/``tls.key``) for the access URL and the wildcard."""

    model_config = _frozen()

    host_secret: K8sName
    """Secret with the certificate of the access URL's host."""
    wildcard_secret: K8sName | None = None
    """Secret with the certificate of the wildcard (dev URL) host."""


class Geo(BaseModel):
    """Where a region's developers are, for GeoDNS; ``test_subnets`` feed ``dns check``."""

    model_config = _frozen()

    continents: tuple[Literal["AF", "AN", "AS", "EU", "NA", "OC", "SA"], ...] = ()
    """Continent codes whose developers this region serves."""
    countries: tuple[Country, ...] = ()
    """ISO 3166 alpha-2 country codes whose developers this region serves."""
    subnets: tuple[Subnet, ...] = ()
    """Client subnets (CIDR) this region serves; must not overlap another region's."""
    test_subnets: tuple[Subnet, ...] = ()
    """Subnets inside ``subnets`` that ``dns check`` queries from (EDNS Client Subnet)."""


class WorkspaceProvider(BaseModel):
    """A Coder v1 workspace provider a satellite replaces, and its old Helm release."""

    model_config = _frozen()

    name: Annotated[Literal_, Field(min_length=1)]
    """The provider's name in Coder (Manage > Providers)."""
    namespace: K8sName
    """Namespace of the provider's workspaces and its old release."""
    release: K8sName = "coder-workspace-provider"
    """The old coder/workspace-provider Helm release, kept for rollback."""


class TestWorkspace(BaseModel):
    """The workspace rebuilt to prove a region works after the migration."""

    model_config = _frozen()
    __test__ = False  # not a pytest class, whatever its name says

    name: Annotated[Literal_, Field(min_length=1)]
    """Workspace name."""
    owner: Annotated[Literal_, Field(min_length=1)]
    """Username of the workspace's owner."""


class PowerDnsSettings(BaseModel):
    model_config = _frozen()

    api_url: BaseUrl
    """PowerDNS HTTP API base URL."""
    server_id: Literal_ = "localhost"
    """PowerDNS server id in API paths."""
    api_key: Secret
    """Reference to the X-API-Key value."""
    nameservers: tuple[HostPort, ...] = ()
    """Authoritative servers (host:port) that dns check queries."""


class Rfc2136Settings(BaseModel):
    model_config = _frozen()

    server: HostPort
    """Primary server (host:port) that accepts RFC 2136 updates."""
    tsig_key_name: DnsName
    """TSIG key name."""
    tsig_algorithm: Literal["hmac-sha256", "hmac-sha384", "hmac-sha512"] = "hmac-sha256"
    """TSIG algorithm."""
    tsig_secret: Secret
    """Reference to the base64 TSIG secret."""


class Route53Settings(BaseModel):
    """Amazon Route 53: credentials by reference or from the standard AWS chain, never literal."""

    model_config = _frozen()

    hosted_zone_id: Annotated[Literal_, Field(pattern=r"^[A-Z0-9]{1,32}$")] | None = None
    """Id of the public hosted zone (Z0123...); default: the hosted zone named coder_dns.zone."""
    profile: Literal_ | None = None
    """AWS profile of the standard credential chain (~/.aws/config); default: the chain's own."""
    access_key_id: Secret | None = None
    """Reference to an access key id; default: the standard AWS credential chain."""
    secret_access_key: Secret | None = None
    """Reference to the secret access key that goes with access_key_id."""
    endpoint_url: BaseUrl | None = None
    """Route 53 API endpoint; default: AWS's own (set it for a Route 53 compatible server)."""
    health_check_interval: Literal[10, 30] = 30
    """Seconds between Route 53's health checks of a region (10 or 30)."""
    nameservers: tuple[HostPort, ...] = ()
    """The hosted zone's name servers (host:53) that dns check and apply's verify query."""

    @model_validator(mode="after")
    def _key_pair(self) -> Route53Settings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key together, or neither")
        return self


class ZoneFileSettings(BaseModel):
    model_config = _frozen()

    path: Annotated[Literal_, Field(min_length=1)]
    """Zone file to write."""


class DnsSettings(BaseModel):
    """The DNS provider, its zone and the shared hostname every developer uses."""

    model_config = _frozen()

    provider: Literal["powerdns", "rfc2136", "zonefile", "route53"]
    """DNS provider: PowerDNS with LUA geo records, RFC 2136 (BIND), a zone file, Route 53."""
    zone: DnsName
    """The zone every hostname lives under."""
    shared_hostname: DnsName
    """The one hostname for every developer (coder.example.com)."""
    geo_routing: bool | None = None
    """Route the shared hostname to the nearest region; default: v1 yes, v2 no (docs/dns.md)."""
    ttl: Annotated[int, Field(ge=1, le=86400)] = 60
    """TTL of the records coder-migrate owns, in seconds."""
    threshold_min_rrsets: Annotated[int, Field(ge=0)] = 10
    """The 30% update/delete threshold applies from this many owned rrsets on (octoDNS)."""
    powerdns: PowerDnsSettings | None = None
    """Settings for provider powerdns."""
    rfc2136: Rfc2136Settings | None = None
    """Settings for provider rfc2136."""
    route53: Route53Settings | None = None
    """Settings for provider route53."""
    zonefile: ZoneFileSettings | None = None
    """Settings for provider zonefile."""

    @model_validator(mode="after")
    def _provider_settings(self) -> DnsSettings:
        if getattr(self, self.provider) is None:
            raise ValueError(f"settings under {self.provider}: for provider {self.provider}")
        return self


# Seed 004's production keys live in infra_model.py (load balancer, zones, database) and
# provisioner_model.py (provisioners, secret store), which read the field types above:
# imported here, after them, and before the sites that use them.
from coder_migrate.inventory.infra_model import Database, LoadBalancer, Zone  # noqa: E402
from coder_migrate.inventory.provisioner_model import Provisioners, SecretStore  # noqa: E402


class _Site(BaseModel):
    """What the primary and a region share: where it runs and how it is reached."""

    model_config = _frozen()

    name: str
    """Inventory host name."""
    access_url: BaseUrl
    """URL developers use, absolute http(s) without a path."""
    wildcard_host: WildcardHost | None = None
    """Wildcard host for dev URLs and subdomain apps, '*.<domain>'."""
    hostname: DnsName | None = None
    """The site's own DNS name; default: the access URL's host (the primary: seed 001's name)."""
    kube_context: Annotated[Literal_, Field(min_length=1)]
    """kubeconfig context of the site's cluster."""
    kubeconfig: Literal_ | None = None
    """kubeconfig file; default: KUBECONFIG or ~/.kube/config."""
    namespace: K8sName
    """Namespace of the Coder release (the satellite or proxy namespace in a region)."""
    release: K8sName
    """Helm release name."""
    chart: ChartRef | None = None
    """Helm chart; defaults to the one in group_vars/all."""
    values: dict[str, Any] = Field(default_factory=dict)
    """Helm values merged over the rendered defaults."""
    tls: TlsSecrets | None = None
    """TLS secret names."""
    dns_targets: tuple[IpAddress, ...] = ()
    """Addresses the site's A/AAAA records point at."""
    load_balancer: LoadBalancer | None = None
    """The cloud load balancer in front of the site; default: the Service as the chart and
    coder_values make it."""
    zones: tuple[Zone, ...] = ()
    """Availability zones to run replicas in: at least one replica per zone, spread across
    topology.kubernetes.io/zone, with a PodDisruptionBudget (v2)."""

    @property
    def dns_name(self) -> str | None:
        """The name DNS records are made for: ``hostname``, else the access URL's host name."""
        if self.hostname:
            return self.hostname
        host = urlsplit(self.access_url).hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return host.lower()
        return None


class Primary(_Site):
    """The Coder primary deployment."""

    database: Database | None = None
    """External PostgreSQL by reference; default: the chart's (v1: its in-cluster database;
    v2: none, set CODER_PG_CONNECTION_URL yourself)."""

    @property
    def own_url(self) -> str:
        """The primary's URL on its own name, which no geo rule answers: the access URL with
        its host replaced by ``hostname`` (scheme and port kept). An access URL on an
        address stays as it is: no DNS answers it. v1 satellites' ``primaryURL``."""
        parts = urlsplit(self.access_url)
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            port = f":{parts.port}" if parts.port else ""
            return f"{parts.scheme}://{self.dns_name or host}{port}"
        return self.access_url


class Region(_Site):
    """One region: a satellite (v1) or a workspace proxy (v2), and what DNS sends to it."""

    display_name: Annotated[Literal_, Field(min_length=1)]
    """Human name of the region (EU West)."""
    region_icon: Annotated[Literal_, Field(pattern=r"^(/|https?://)\S+$")] | None = None
    """Icon of the region's workspace proxy (v2): a dashboard path such as
    /emojis/1f1ea-1f1fa.png or an http(s) URL; default: the flag of the first of
    coder_geo.countries, else a globe."""
    geo: Geo = Field(default_factory=Geo)
    """Who this region serves, for GeoDNS."""
    workspace_providers: tuple[WorkspaceProvider, ...] = ()
    """Coder v1 workspace providers this region's satellite replaces."""
    test_workspace: TestWorkspace | None = None
    """Workspace rebuilt to prove the region works after the migration."""
    canary: bool = False
    """Apply this region first, alone, before the others."""
    provisioners: Provisioners | None = None
    """External provisioner daemons in the region (v2): {replicas, tags}."""
    secret_store: SecretStore = Field(default_factory=SecretStore)
    """Where the region's provisioner PSK lives (default: a Secret coder-migrate writes)."""

    @property
    def icon(self) -> str:
        """The icon sent for the region's proxy: ``coder_region_icon``, else the flag emoji of
        its first country (``/emojis/<codepoints>.png``, Coder's emoji set), else a globe."""
        if self.region_icon:
            return self.region_icon
        if not self.geo.countries:
            return "/emojis/1f310.png"
        flag = "-".join(f"{0x1F1E6 + ord(letter) - ord('A'):x}" for letter in self.geo.countries[0])
        return f"/emojis/{flag}.png"


class Topology(BaseModel):
    """Everything coder-migrate knows about one environment, validated and frozen."""

    model_config = _frozen()

    source: str
    """Inventory directory."""
    generation: Literal["v1", "v2"]
    """Coder generation: v1 satellites or v2 workspace proxies."""
    version: Annotated[Literal_, Field(pattern=r"^\d+\.\d+(\.\d+)?([-+].*)?$")]
    """Target Coder version."""
    session_token: Secret
    """Reference to a Coder session token of a site manager (v1) or owner (v2)."""
    chart: ChartRef
    """Default Helm chart."""
    dns: DnsSettings
    """DNS provider and names."""
    contacts: dict[str, str] = Field(default_factory=dict)
    """Contacts and links copied into runbooks."""
    primary: Primary
    """The primary."""
    regions: tuple[Region, ...]
    """Regions in inventory order."""

    def region(self, name: str) -> Region:
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(name)

    @property
    def canary(self) -> Region | None:
        """The region applied first: the one marked ``coder_canary``, else the first listed."""
        marked = [r for r in self.regions if r.canary]
        return marked[0] if marked else (self.regions[0] if self.regions else None)

    def chart_for(self, site: _Site) -> ChartRef:
        return site.chart or self.chart

    @property
    def geo_routed(self) -> bool:
        """Whether the shared hostname goes to the nearest region: v1 by default (satellites
        proxy everything to the primary); v2 only when asked (proxies serve neither the
        dashboard nor the API)."""
        if self.dns.geo_routing is not None:
            return self.dns.geo_routing
        return self.generation == "v1"


def _under(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)

