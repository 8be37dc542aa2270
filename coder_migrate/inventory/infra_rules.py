"""Rules of seed 004's production keys (``coder_load_balancer``, ``coder_zones``,
``coder_database``) that span fields: what the generation's chart can express, which
``coder_values`` keys they own, what a kind needs. The loader checks them with the rules of
:mod:`coder_migrate.inventory.rules` and :mod:`coder_migrate.inventory.site_rules`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from coder_migrate.inventory.model import Primary, Region, Topology
from coder_migrate.inventory.rules import Finding

__all__ = [
    "V1_ANNOTATIONS_VERSION",
    "V1_INGRESS_VERSION",
    "V1_SPREAD_VERSION",
    "infra_findings",
]

_INGRESS_KINDS = ("gcp-https", "azure-appgw")
# The first coder/coder (v1) chart versions with a key, read in coder/enterprise-helm's
# values.yaml at each tag. One place: engine/infra.py renders with these too.
V1_ANNOTATIONS_VERSION = "1.21.1"  # coderd.serviceAnnotations (1.21.1 values.yaml:25)
V1_SPREAD_VERSION = "1.25.0"  # coderd.affinity (1.25.0 values.yaml:158); 1.21 has neither
V1_INGRESS_VERSION = "1.26.0"  # the ingress value (1.26.0 values.yaml:179)
_V1_ANNOTATIONS = tuple(int(n) for n in V1_ANNOTATIONS_VERSION.split("."))


def infra_findings(topology: Topology) -> list[Finding]:
    findings: list[Finding] = []
    sites: list[Primary | Region] = [topology.primary, *topology.regions]
    for site in sites:
        findings += _load_balancer(topology, site)
        findings += _zones(topology, site)
        findings += _owned_values(topology, site)
    return findings


def _chart_version(topology: Topology, site: Primary | Region) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", topology.chart_for(site).version.split("-")[0])
    return tuple(int(n) for n in numbers[:3])


def _load_balancer(topology: Topology, site: Primary | Region) -> Iterator[Finding]:
    lb = site.load_balancer
    if lb is None:
        return
    key = "coder_load_balancer"
    kind = lb.kind
    ingress = kind in _INGRESS_KINDS
    if lb.source_ranges and (ingress or kind == "none"):
        why = ("an Ingress load balancer has no source ranges; restrict clients with the "
               "cloud's policy, e.g. Cloud Armor or a WAF policy" if ingress else
               "kind none makes no load balancer")
        yield Finding(
            site.name, f"{key}.source_ranges",
            f"no source_ranges with kind {lb.kind} ({why}; they apply to the LoadBalancer "
            "Service of aws-nlb, aws-clb, gcp-ssl and azure-lb)", ", ".join(lb.source_ranges))
    if ingress and site.dns_name is None:
        yield Finding(site.name, "coder_hostname",
                      f"a DNS name for the Ingress of kind {lb.kind}", "nothing")
    if kind == "gcp-ssl" and site.tls is None:
        yield Finding(
            site.name, "coder_tls",
            "TLS secrets with kind gcp-ssl (a layer 4 load balancer with SSL enabled: Coder "
            "terminates TLS itself)", "nothing")
    if topology.generation != "v1":
        return
    version = topology.chart_for(site).version
    if ingress:
        yield Finding(
            site.name, f"{key}.kind",
            f"a Service kind with coder/coder {version}: {lb.kind} needs an Ingress, which "
            f"1.21 cannot render (the chart's ingress value arrives in {V1_INGRESS_VERSION})",
            lb.kind)
    elif (kind == "aws-nlb" or lb.annotations) and (
            _chart_version(topology, site) < _V1_ANNOTATIONS):
        what = ("kind aws-nlb (its Service annotation "
                "service.beta.kubernetes.io/aws-load-balancer-type: nlb)"
                if kind == "aws-nlb" else "annotations")
        yield Finding(
            site.name, f"{key}.{'kind' if kind == 'aws-nlb' else 'annotations'}",
            f"no Service annotations with coder/coder {version}: {what} cannot be set, the "
            "chart has no Service annotation value before 1.21.1 (coderd.serviceAnnotations); "
            "use coder_chart.version 1.21.1 or later",
            lb.kind if kind == "aws-nlb" else ", ".join(lb.annotations))


def _nested(values: Mapping[str, Any], *path: str) -> Any:
    node: Any = values
    for step in path:
        node = node.get(step) if isinstance(node, Mapping) else None
    return node


def _zones(topology: Topology, site: Primary | Region) -> Iterator[Finding]:
    if not site.zones:
        return
    if len(set(site.zones)) != len(site.zones):
        yield Finding(site.name, "coder_zones", "each zone once", ", ".join(site.zones))
    if topology.generation == "v1":
        yield Finding(
            site.name, "coder_zones",
            f"no zones with coder/coder {topology.chart_for(site).version}: 1.21 has no "
            "affinity or topology spread value to spread replicas across zones "
            f"(coderd.affinity arrives in {V1_SPREAD_VERSION}); set coderd.replicas in "
            "coder_values",
            ", ".join(site.zones))
        return
    replicas = _nested(site.values, "coder", "replicaCount")
    if isinstance(replicas, int) and replicas < len(site.zones):
        yield Finding(
            site.name, "coder_values.coder.replicaCount",
            f"at least one replica per zone ({len(site.zones)} in coder_zones)", str(replicas))


# coder_values keys each setting owns: (setting, path, applies).
def _owned(topology: Topology, site: Primary | Region) -> Iterator[tuple[str, tuple[str, ...]]]:
    v2 = topology.generation == "v2"
    lb = site.load_balancer
    if lb is not None:
        if v2:
            for key in ("type", "sessionAffinity", "externalTrafficPolicy", "annotations",
                        "enable"):
                yield "coder_load_balancer", ("coder", "service", key)
            if lb.kind in _INGRESS_KINDS:
                yield "coder_load_balancer", ("coder", "ingress")
        else:
            yield "coder_load_balancer", ("coderd", "serviceSpec")
            yield "coder_load_balancer", ("coderd", "serviceAnnotations")
    if site.zones and v2:
        for key in ("topologySpreadConstraints", "affinity"):
            yield "coder_zones", ("coder", key)
        yield "coder_zones", ("extraTemplates",)
    if isinstance(site, Primary) and site.database is not None:
        yield "coder_database", ("postgres",)


def _owned_values(topology: Topology, site: Primary | Region) -> Iterator[Finding]:
    for setting, path in _owned(topology, site):
        if _nested(site.values, *path) is not None:
            yield Finding(
                site.name, "coder_values." + ".".join(path),
                f"no {'.'.join(path)} in coder_values: coder-migrate sets it from {setting}",
                "it set")
    if isinstance(site, Primary) and site.database is not None:
        for section in ("coder", "coderd"):
            env = _nested(site.values, section, "env")
            for entry in env if isinstance(env, list) else []:
                if isinstance(entry, Mapping) and entry.get("name") == "CODER_PG_CONNECTION_URL":
                    yield Finding(
                        site.name, f"coder_values.{section}.env",
                        "no CODER_PG_CONNECTION_URL entry: coder-migrate sets it from "
                        "coder_database", "CODER_PG_CONNECTION_URL")
