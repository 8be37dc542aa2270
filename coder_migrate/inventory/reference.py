"""``docs/inventory.md``: the reference of every inventory key, generated from the model.

Keys, sub-keys, types, defaults and meanings come from :mod:`coder_migrate.inventory.model`
(field types and docstrings), where a key may be set from the loader's scopes, and the
examples from :data:`EXAMPLES`, which ``tests/unit/test_inventory_reference.py`` validates
against the model (and requires for every key and sub-key). The prose around the tables is
``templates/inventory/reference.md.j2``. ``coder-migrate inventory reference`` prints it.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import jinja2
import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from coder_migrate.inventory import model
from coder_migrate.inventory.argspec import IndentedDumper
from coder_migrate.inventory.loader import GLOBAL_FIELDS, variable_name
from coder_migrate.inventory.model import Primary, Region, SecretRef, Topology

__all__ = ["EXAMPLES", "Key", "keys", "reference_markdown"]

_VALIDATED_AS: dict[Callable[..., Any], str] = {
    model._dns_name: "DNS name",
    model._k8s_name: "Kubernetes name",
    model._base_url: "URL",
    model._wildcard: "wildcard host `*.<domain>`",
    model._ip: "IP address",
    model._network: "subnet (CIDR)",
    model._host_port: "`host:port`",
    model._country: "country code (ISO 3166 alpha-2)",
    model._reject_literal_secret: "secret reference",
}

_SECRET = {"env": "CODER_SESSION_TOKEN"}

EXAMPLES: dict[str, list[Any]] = {
    "coder_generation": ["v1"],
    "coder_version": ["1.21.0", "2.24.0"],
    "coder_session_token": [
        _SECRET, {"file": "~/.config/coder/session"},
        {"vault": "$ANSIBLE_VAULT;1.1;AES256\n6162..."},
    ],
    "coder_chart": [{"repo": "https://helm.coder.com", "name": "coder", "version": "1.21.0"}],
    "coder_dns": [
        {"provider": "powerdns", "zone": "example.com", "shared_hostname": "coder.example.com",
         "ttl": 60, "powerdns": {"api_url": "https://dns-api.example.com:8081",
                                 "server_id": "localhost", "api_key": {"env": "PDNS_API_KEY"},
                                 "nameservers": ["192.0.2.53:53"]}},
        {"provider": "rfc2136", "zone": "example.com", "shared_hostname": "coder.example.com",
         "rfc2136": {"server": "192.0.2.53:53", "tsig_key_name": "coder-migrate.",
                     "tsig_algorithm": "hmac-sha256",
                     "tsig_secret": {"file": "secrets/tsig-secret"}}},
        {"provider": "zonefile", "zone": "example.com", "shared_hostname": "coder.example.com",
         "zonefile": {"path": "zones/example.com.zone"}},
        {"provider": "route53", "zone": "example.com", "shared_hostname": "coder.example.com",
         "geo_routing": True, "threshold_min_rrsets": 10,
         "route53": {"hosted_zone_id": "Z0123456789ABCDEFGHIJ", "profile": "coder-dns",
                     "access_key_id": {"env": "AWS_ACCESS_KEY_ID"},
                     "secret_access_key": {"file": "secrets/aws-secret-access-key"},
                     "endpoint_url": "https://route53.amazonaws.com",
                     "health_check_interval": 30,
                     "nameservers": ["ns-123.awsdns-45.com:53"]}},
    ],
    "coder_contacts": [{"team": "platform@example.com",
                        "escalation": "https://status.example.com"}],
    "coder_access_url": ["https://coder-eu-west.example.com", "http://127.0.0.1:17081"],
    "coder_wildcard_host": ["*.coder-eu-west.example.com"],
    "coder_hostname": ["coder-eu-west.example.com", "coder-primary.example.com"],
    "coder_kube_context": ["prod-eu-west"],
    "coder_kubeconfig": ["~/.kube/prod.yaml"],
    "coder_namespace": ["coder-satellite"],
    "coder_release": ["coder-satellite"],
    "coder_values": [{"coderd": {"replicas": 2}}],
    "coder_tls": [{"host_secret": "coder-satellite-cert",
                   "wildcard_secret": "coder-satellite-cert"}],
    "coder_dns_targets": [["203.0.113.11", "2001:db8::11"]],
    "coder_region_display_name": ["EU West"],
    "coder_region_icon": ["/emojis/1f1ee-1f1ea.png", "https://icons.example.com/eu.svg"],
    "coder_geo": [{"continents": ["EU"], "countries": ["IE", "GB", "FR", "DE"],
                   "subnets": ["203.0.113.0/26"], "test_subnets": ["203.0.113.1/32"]}],
    "coder_workspace_providers": [[{"name": "eu-west", "namespace": "coder-workspaces",
                                    "release": "coder-workspace-provider"}]],
    "coder_test_workspace": [{"name": "migration-check-eu-west", "owner": "platform-bot"}],
    "coder_canary": [True],
    "coder_load_balancer": [
        {"kind": "aws-nlb", "source_ranges": ["203.0.113.0/24"],
         "annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}},
        {"kind": "gcp-https"},
    ],
    "coder_zones": [["eu-west-1a", "eu-west-1b", "eu-west-1c"]],
    "coder_database": [{"url": {"env": "CODER_PG_CONNECTION_URL"}},
                       {"url": {"file": "~/.config/coder/pg-url"}}],
    "coder_provisioners": [
        {"replicas": 2, "tags": {"region": "eu-west", "cloud": "aws"}},
        {"replicas": 1, "tags": {"region": "eu-west"}, "release": "coder-provisioner",
         "chart": {"repo": "https://helm.coder.com/v2", "name": "coder-provisioner",
                   "version": "2.15.0"}},
    ],
    "coder_secret_store": [{"kind": "kubernetes"},
                           {"kind": "external", "secret": "coder-provisioner-psk"}],
}
"""Example values of every key, shown in the reference (and checked against the model)."""


@dataclass(frozen=True)
class Key:
    """One inventory key (``coder_dns``) or sub-key (``coder_dns.powerdns.api_key``)."""

    name: str
    kind: str
    default: str
    meaning: str
    where: str = ""
    sub_keys: tuple[Key, ...] = ()
    examples: tuple[str, ...] = ()


def keys() -> list[Key]:
    """Every key, in the order the reference lists them: shared, primary and regions, regions."""
    found: dict[str, Key] = {}
    for field in GLOBAL_FIELDS:
        found[variable_name(field)] = _key(variable_name(field), Topology.model_fields[field],
                                           "`group_vars/all`: the same on every host")
    for owner in (Primary, Region):
        for field, info in owner.model_fields.items():
            name = variable_name(field)
            if field == "name" or name in found:
                continue
            found[name] = _key(name, info, _where(field))
    return list(found.values())


def _where(field: str) -> str:
    if field == "chart":
        return ("`group_vars/all` (the default chart); a site's `host_vars/<host>.yml` or "
                "`group_vars/coder_regions/` (its own)")
    if field in Primary.model_fields:
        return ("the primary and regions: `host_vars/<host>.yml`, the host's line in the "
                "hosts file, or `group_vars/coder_regions/` for every region")
    return "regions only: `host_vars/<region>.yml` or `group_vars/coder_regions/`"


def _key(name: str, info: FieldInfo, where: str) -> Key:
    shown = [f"{name}:" + _yaml(value) for value in EXAMPLES.get(name, [])]
    return Key(
        name=name, kind=_kind(info.annotation, info.metadata), default=_default(info),
        meaning=_meaning(info), where=where, sub_keys=tuple(_sub_keys(info.annotation, "")),
        examples=tuple(shown),
    )


def _sub_keys(annotation: Any, prefix: str) -> list[Key]:
    owner = _model_of(annotation)
    if owner is None or owner is SecretRef:
        return []
    found = []
    for field, info in owner.model_fields.items():
        name = f"{prefix}{field}"
        found.append(Key(name=name, kind=_kind(info.annotation, info.metadata),
                         default=_default(info), meaning=_meaning(info)))
        found.extend(_sub_keys(info.annotation, f"{name}."))
    return found


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``X``, ``X | None``, ``tuple[X, ...]`` or ``Annotated[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_of(argument)
        if found is not None:
            return found
    return None


def _kind(annotation: Any, metadata: list[Any]) -> str:
    for item in metadata:
        if isinstance(item, AfterValidator | BeforeValidator) and item.func in _VALIDATED_AS:
            return _VALIDATED_AS[item.func]
    origin = get_origin(annotation)
    arguments = get_args(annotation)
    if origin is Annotated:
        return _kind(arguments[0], [*arguments[1:], *metadata])
    if origin in (Union, types.UnionType):
        kinds = [_kind(a, metadata) for a in arguments if a is not type(None)]
        return " or ".join(kinds)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in arguments)
    if origin in (tuple, list):
        return f"list of {_kind(arguments[0], [])}"
    if origin is dict:
        return "mapping" if arguments[1] is Any else f"mapping of {_kind(arguments[1], [])}s"
    if annotation is SecretRef:
        return "secret reference"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping (sub-keys below)"
    return {str: "string", int: "integer", bool: "boolean"}.get(annotation, str(annotation))


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        return "empty" if not (value.model_dump() if isinstance(value, BaseModel) else value) \
            else f"`{value}`"
    if info.default is PydanticUndefined:
        return "required"
    if info.default is None or info.default == ():
        return "none"
    return f"`{str(info.default).lower() if isinstance(info.default, bool) else info.default}`"


def _meaning(info: FieldInfo) -> str:
    return " ".join((info.description or "").split())


def _yaml(value: Any) -> str:
    """*value* as it follows ``key:`` in a YAML file."""
    if isinstance(value, dict) and set(value) == {"vault"}:
        return " !vault |\n  " + str(value["vault"]).replace("\n", "\n  ")
    text = yaml.dump(value, Dumper=IndentedDumper, sort_keys=False, default_flow_style=False,
                     width=100)
    text = text.removesuffix("...\n").rstrip("\n")
    if isinstance(value, dict | list) and value:
        return "\n" + "\n".join(f"  {line}" for line in text.splitlines())
    return " " + text


_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("coder_migrate", "templates/inventory"),
    undefined=jinja2.StrictUndefined, autoescape=jinja2.select_autoescape(default=False),
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
)


def reference_markdown() -> str:
    """docs/inventory.md as it must be committed."""
    return _ENVIRONMENT.get_template("reference.md.j2").render(keys=keys())
