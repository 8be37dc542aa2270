"""Seed 004's production shape as chart values: the cloud load balancer, replicas per
availability zone and the primary's database by reference.

One function per piece, each returning the values it adds to a site's release (merged over
the rendered template, under the user's ``coder_values``, which the inventory rules keep off
these keys: :mod:`coder_migrate.inventory.infra_rules`). Facts about the charts are in
``reference/real-charts.md``:

- v2 (``coder-v2/coder``): ``coder.service.*`` / ``coder.ingress.*``, ``coder.replicaCount``,
  ``coder.topologySpreadConstraints``, ``coder.affinity``, the PodDisruptionBudget as an
  ``extraTemplates`` entry, ``CODER_PG_CONNECTION_URL`` in ``coder.env`` from a Secret.
- v1 (``coder/coder`` 1.21): ``coderd.serviceSpec`` (rendered into the Service as written),
  ``coderd.serviceAnnotations`` from chart 1.21.1 on, ``postgres.*`` with
  ``postgres.default.enable: false`` and the password from a Secret (key ``password``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from coder_migrate import sensitive
from coder_migrate.errors import PlanError
from coder_migrate.inventory import Primary, Region, Topology
from coder_migrate.inventory.infra_rules import (
    V1_ANNOTATIONS_VERSION,
    V1_INGRESS_VERSION,
    V1_SPREAD_VERSION,
)
from coder_migrate.inventory.model import LoadBalancer

__all__ = [
    "DATABASE_SECRET",
    "INGRESS_KINDS",
    "NLB_ANNOTATION",
    "SOURCE_RANGES_ANNOTATION",
    "V1_ANNOTATIONS_VERSION",
    "V1_INGRESS_VERSION",
    "V1_SPREAD_VERSION",
    "ZONE_LABEL",
    "DatabaseUrl",
    "database_secret_data",
    "infra_values",
    "parse_database_url",
    "service_shape",
    "v1_chart_has_service_annotations",
]

ZONE_LABEL = "topology.kubernetes.io/zone"
NLB_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer-type"
# Kubernetes' own annotation for a LoadBalancer Service's allowed client ranges
# (k8s.io/api core/v1 AnnotationLoadBalancerSourceRangesKey): coder-v2/coder has no
# loadBalancerSourceRanges value, the cloud providers read this annotation.
SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"
GCE_INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
AZURE_APPGW_CLASS = "azure-application-gateway"
INGRESS_KINDS = ("gcp-https", "azure-appgw")


# The Secret the deploy writes the database reference's value into (primary's namespace).
DATABASE_SECRET = "coder-database"  # noqa: S105 - a Secret name
_V2_URL_KEY = "url"
_V1_PASSWORD_KEY = "password"  # noqa: S105 - the key coder/coder 1.21 reads


def _version(text: str) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", text.split("-")[0].split("+")[0])
    return tuple(int(n) for n in numbers[:3])


def v1_chart_has_service_annotations(chart_version: str) -> bool:
    return _version(chart_version) >= _version(V1_ANNOTATIONS_VERSION)


# -- the load balancer --------------------------------------------------------------------


def _service_annotations(lb: LoadBalancer) -> dict[str, str]:
    """The Service's annotations: the kind's own, the source ranges (v2), the user's."""
    annotations: dict[str, str] = {}
    kind = lb.kind
    if kind == "aws-nlb":
        annotations[NLB_ANNOTATION] = "nlb"
    if lb.kind not in INGRESS_KINDS:
        annotations.update(lb.annotations)
    return annotations


def _service_spec(lb: LoadBalancer) -> dict[str, Any]:
    """type, externalTrafficPolicy and sessionAffinity per kind (seed 004)."""
    kind = lb.kind
    if kind in ("none", "azure-appgw"):
        return {"type": "ClusterIP"}
    if kind == "gcp-https":
        return {"type": "NodePort"}
    spec: dict[str, Any] = {"type": "LoadBalancer", "sessionAffinity": "None"}
    if lb.kind in ("aws-nlb", "gcp-ssl"):
        spec["externalTrafficPolicy"] = "Local"  # the client's source address preserved
    else:
        spec["externalTrafficPolicy"] = "Cluster"
    return spec


def _v2_load_balancer(site: Primary | Region, lb: LoadBalancer) -> dict[str, Any]:
    kind = lb.kind
    spec = _service_spec(lb)
    annotations = _service_annotations(lb)
    if lb.source_ranges:
        annotations[SOURCE_RANGES_ANNOTATION] = ",".join(lb.source_ranges)
    service: dict[str, Any] = {"enable": True, "type": spec["type"],
                               "sessionAffinity": spec.get("sessionAffinity", "None"),
                               "annotations": annotations}
    if "externalTrafficPolicy" in spec:
        service["externalTrafficPolicy"] = spec["externalTrafficPolicy"]
    values: dict[str, Any] = {"coder": {"service": service}}
    if lb.kind in INGRESS_KINDS:
        ingress: dict[str, Any] = {"enable": True, "host": site.dns_name or "",
                                   "annotations": dict(lb.annotations)}
        if kind == "gcp-https":
            ingress["annotations"][GCE_INGRESS_CLASS_ANNOTATION] = "gce"
        else:
            ingress["className"] = AZURE_APPGW_CLASS
        if site.wildcard_host:
            ingress["wildcardHost"] = site.wildcard_host
        if site.tls is not None:
            ingress["tls"] = {"enable": True, "secretName": site.tls.host_secret}
            if site.wildcard_host:
                ingress["tls"]["wildcardSecretName"] = (
                    site.tls.wildcard_secret or site.tls.host_secret)
        values["coder"]["ingress"] = ingress
    return values


def _v1_load_balancer(topology: Topology, site: Primary | Region,
                      lb: LoadBalancer) -> dict[str, Any]:
    chart = topology.chart_for(site)
    annotations = _service_annotations(lb)
    if lb.kind in INGRESS_KINDS:  # the inventory rules refuse it first; never render half
        raise PlanError(
            f"{site.name}: coder_load_balancer kind {lb.kind} needs an Ingress, which "
            f"coder/coder {chart.version} cannot render (its ingress value arrives in "
            f"{V1_INGRESS_VERSION})")
    if annotations and not v1_chart_has_service_annotations(chart.version):
        raise PlanError(
            f"{site.name}: coder_load_balancer needs Service annotations, which coder/coder "
            f"{chart.version} cannot set (coderd.serviceAnnotations arrives in "
            f"{V1_ANNOTATIONS_VERSION})")
    spec = _service_spec(lb)
    if spec["type"] == "ClusterIP":
        # 1.21.0's default externalTrafficPolicy Local is refused on a ClusterIP Service.
        spec["externalTrafficPolicy"] = ""
    if lb.source_ranges:
        spec["loadBalancerSourceRanges"] = list(lb.source_ranges)
    coderd: dict[str, Any] = {"serviceSpec": spec}
    if annotations:
        coderd["serviceAnnotations"] = annotations
    return {"coderd": coderd}


# -- replicas per zone ----------------------------------------------------------------------


def _v2_selector(site: Primary | Region) -> dict[str, str]:
    name = site.values.get("nameOverride") or "coder"
    return {"app.kubernetes.io/name": str(name), "app.kubernetes.io/instance": site.release}


def _v2_zones(site: Primary | Region) -> dict[str, Any]:
    zones = list(site.zones)
    selector = _v2_selector(site)
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{site.release}-zones", "labels": dict(selector)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}},
    }
    return {
        "coder": {
            "replicaCount": len(zones),
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": ZONE_LABEL, "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": dict(selector)},
            }],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": ZONE_LABEL, "operator": "In", "values": zones}]}],
            }}},
        },
        "extraTemplates": [budget],
    }


# -- the database ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseUrl:
    """A PostgreSQL URL's parts; ``password`` is registered as sensitive by the resolver."""

    host: str
    port: str
    user: str
    password: str
    database: str
    sslmode: str


def parse_database_url(url: str, where: str) -> DatabaseUrl:
    """The parts v1's ``postgres.*`` needs; errors name *where*, never the URL."""
    try:
        parts = urlsplit(url)
        port = str(parts.port or 5432)
    except ValueError:
        raise PlanError(f"{where}: not a postgres:// URL (not shown)") from None
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise PlanError(f"{where}: a postgres://user:password@host:port/database URL "
                        "(found something else, not shown)")
    database = unquote(parts.path.lstrip("/"))
    if not parts.username or not parts.password or not database:
        raise PlanError(f"{where}: a URL with a user, a password and a database name "
                        "(postgres://user:password@host:5432/coder?sslmode=require)")
    sslmode = parse_qs(parts.query).get("sslmode", ["require"])[0]
    # The URL is registered by its resolver; the password alone (v1's Secret) is too.
    password = sensitive.register(unquote(parts.password))
    return DatabaseUrl(host=parts.hostname, port=port, user=unquote(parts.username),
                       password=password, database=database, sslmode=sslmode)


def _database_url(topology: Topology, site: Primary) -> str:
    assert site.database is not None
    return site.database.url.resolve(Path(topology.source) if topology.source else None)


def database_secret_data(topology: Topology, site: Primary) -> dict[str, str]:
    """What the database Secret holds: v2 the whole URL, v1 the password only."""
    url = _database_url(topology, site)
    if topology.generation == "v2":
        return {_V2_URL_KEY: url}
    where = f"{site.name}: coder_database.url ({site.database.url.describe()})"  # type: ignore[union-attr]
    return {_V1_PASSWORD_KEY: parse_database_url(url, where).password}


def _database(topology: Topology, site: Primary) -> dict[str, Any]:
    if topology.generation == "v2":
        return {"coder": {"env": [{
            "name": "CODER_PG_CONNECTION_URL",
            "valueFrom": {"secretKeyRef": {"name": DATABASE_SECRET, "key": _V2_URL_KEY}},
        }]}}
    assert site.database is not None
    where = f"{site.name}: coder_database.url ({site.database.url.describe()})"
    url = parse_database_url(_database_url(topology, site), where)
    return {"postgres": {
        "host": url.host, "port": url.port, "user": url.user, "database": url.database,
        "sslMode": url.sslmode, "passwordSecret": DATABASE_SECRET,
        "default": {"enable": False},
    }}


# V1 values derived from the database URL: shown as (sensitive) in plans.
V1_DATABASE_PATHS = (("postgres", "host"), ("postgres", "port"), ("postgres", "user"),
                     ("postgres", "database"))


# -- together -------------------------------------------------------------------------------


def infra_values(topology: Topology, site: Primary | Region) -> list[dict[str, Any]]:
    """The values each piece adds to *site*'s release, in order (deep-merged by the caller)."""
    pieces: list[dict[str, Any]] = []
    lb = site.load_balancer
    v2 = topology.generation == "v2"
    if lb is not None:
        pieces.append(_v2_load_balancer(site, lb) if v2 else _v1_load_balancer(topology, site, lb))
    if site.zones:
        if not v2:
            raise PlanError(
                f"{site.name}: coder_zones needs zone spread, which coder/coder "
                f"{topology.chart_for(site).version} cannot express (no affinity or "
                f"topologySpreadConstraints value; coderd.affinity arrives in "
                f"{V1_SPREAD_VERSION})")
        pieces.append(_v2_zones(site))
    if isinstance(site, Primary) and site.database is not None:
        pieces.append(_database(topology, site))
    return pieces


def service_shape(topology: Topology, site: Primary | Region) -> str:
    """One line: the Service (and Ingress) the site's load balancer gets, for ``plan``."""
    lb = site.load_balancer
    if lb is None:
        return f"{len(site.zones)} zones ({', '.join(site.zones)})" if site.zones else ""
    spec = _service_spec(lb)
    words = [f"Service {spec['type']}"]
    if spec["type"] == "LoadBalancer":
        words.append(f"externalTrafficPolicy {spec['externalTrafficPolicy']}")
        words.append("sessionAffinity None")
    annotations = _service_annotations(lb)
    if lb.source_ranges:
        words.append(f"source ranges {', '.join(lb.source_ranges)}")
    if annotations:
        words.append("annotations " + ", ".join(f"{k}={v}" for k, v in annotations.items()))
    shape = f"{lb.kind}: " + ", ".join(words)
    if lb.kind in INGRESS_KINDS:
        what = "class gce" if lb.kind in ("gcp-https",) else f"class {AZURE_APPGW_CLASS}"
        shape += f"; Ingress {what} for {site.dns_name}"
        if site.wildcard_host:
            shape += f" and {site.wildcard_host}"
    if site.zones:
        shape += f"; {len(site.zones)} zones ({', '.join(site.zones)})"
    return shape
