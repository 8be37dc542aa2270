"""The model of seed 004's production keys: ``coder_load_balancer`` (:class:`LoadBalancer`),
``coder_zones`` (:data:`Zone`) and ``coder_database`` (:class:`Database`).

Part of :mod:`coder_migrate.inventory.model` (which imports it after the field types it
reads); cross-field rules: :mod:`coder_migrate.inventory.infra_rules`; chart keys:
:mod:`coder_migrate.engine.infra`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from coder_migrate.inventory.model import _LABEL, Literal_, Secret, Subnet, _frozen

__all__ = ["LOAD_BALANCER_KINDS", "AnnotationKey", "Database", "LoadBalancer", "Zone"]


LOAD_BALANCER_KINDS = ("aws-nlb", "aws-clb", "gcp-https", "gcp-ssl", "azure-lb", "azure-appgw",
                       "none")
_ANNOTATION_KEY_RE = re.compile(
    rf"^({_LABEL}(\.{_LABEL})*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?$"
)
_LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def _annotation_key(value: str) -> str:
    if not _ANNOTATION_KEY_RE.match(value):
        raise ValueError(
            "a Kubernetes annotation key such as service.beta.kubernetes.io/aws-load-balancer-"
            f"type, found {value!r}"
        )
    return value


def _zone(value: str) -> str:
    if not _LABEL_VALUE_RE.match(value):
        raise ValueError(
            "a zone name as nodes carry it in topology.kubernetes.io/zone (letters, digits, "
            f"'-', '_' and '.', at most 63), such as us-east-1a, found {value!r}"
        )
    return value


AnnotationKey = Annotated[str, AfterValidator(_annotation_key)]
Zone = Annotated[str, AfterValidator(_zone)]


class LoadBalancer(BaseModel):
    """The cloud load balancer in front of a site (seed 004, "Load balancer")."""

    model_config = _frozen()

    kind: Literal["aws-nlb", "aws-clb", "gcp-https", "gcp-ssl", "azure-lb", "azure-appgw",
                  "none"]
    """aws-nlb (L4, annotated Service, externalTrafficPolicy Local), aws-clb (Service,
    sessionAffinity None), gcp-https (Ingress class gce over a NodePort Service), gcp-ssl (L4
    LoadBalancer Service, TLS on Coder: needs coder_tls), azure-lb (LoadBalancer Service),
    azure-appgw (Ingress class azure-application-gateway over a ClusterIP Service), none (a
    ClusterIP Service: no cloud load balancer)."""
    annotations: dict[AnnotationKey, Literal_] = Field(default_factory=dict)
    """Extra annotations on the object the load balancer is made from: the Service, or the
    Ingress for gcp-https and azure-appgw."""
    source_ranges: tuple[Subnet, ...] = ()
    """Client subnets (CIDR) the load balancer admits; Service kinds only."""


class Database(BaseModel):
    """The primary's external PostgreSQL (seed 004, "Managed database"), by reference."""

    model_config = _frozen()

    url: Secret
    """Reference to the PostgreSQL connection URL (postgres://user:password@host:port/db?
    sslmode=require): {env: NAME}, {file: PATH} or a !vault value, never a literal."""
