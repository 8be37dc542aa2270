"""Seed 004's production keys: ``coder_load_balancer``, ``coder_zones``, ``coder_database``.

Inventory rules (one line naming file, key, expected), the chart values each renders per
generation, and the plan: the Service shape per site, the database Secret as a change that
never holds the value. Chart facts cite the real charts (reference/real-charts.md), file:line:
coder/coder (v2) helm/coder/values.yaml at 008b8d9 (2.15.0): ``coder.service`` (:263) with
``type`` (:268), ``sessionAffinity`` (:273), ``externalTrafficPolicy`` (:278),
``loadBalancerIP`` (:284), ``annotations`` (:287), ``httpNodePort``/``httpsNodePort``
(:291, :295; no source ranges key between :263 and :295), ``coder.ingress`` (:298) with
``className`` (:304), ``host`` (:307), ``wildcardHost`` (:314), ``annotations`` (:316),
``tls`` (:318), ``coder.topologySpreadConstraints`` (:239), ``coder.affinity`` (:226) and
``extraTemplates`` (:348, the file's last key). coder/enterprise-helm (v1) at tag 1.21.0
(3a9b365c): values.yaml:9 ``coderd.serviceSpec``, rendered into the Service as written
(templates/coderd.yaml:237 ``toYaml .Values.coderd.serviceSpec``; the Service's metadata,
:229-235, has no annotations); the Service annotation key arrives in 1.21.1 (20518c60:
values.yaml:25 ``coderd.serviceAnnotations``, templates/coderd.yaml:238); ``coderd.affinity``
in 1.25.0 (b98eaca4: values.yaml:158), none in 1.21.0; a public ``ingress`` key in 1.26.0
(d2880af0: values.yaml:179, enable/host/annotations/tls), ``ingress.className`` in 1.30.0
(9716eb03: values.yaml:297); the refusal names 1.26.0 (inventory/infra_rules.py
V1_INGRESS_VERSION);
``postgres.passwordSecret`` (values.yaml:148) read with key ``password``
(templates/_common.tpl:34-38, ``coder.postgres.env``), used only when
``postgres.default.enable`` (values.yaml:159, default true) is false (_common.tpl:16).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from coder_migrate.cli import main
from coder_migrate.engine.deploy import deploy_waves, plan_deploy
from coder_migrate.engine.infra import (
    DATABASE_SECRET,
    NLB_ANNOTATION,
    SOURCE_RANGES_ANNOTATION,
    ZONE_LABEL,
    service_shape,
)
from coder_migrate.engine.kinds.database_secret import DatabaseSecretChange
from coder_migrate.engine.values import release_values
from coder_migrate.engine.world import PrimaryRecords, SiteState, World
from coder_migrate.errors import PlanError
from coder_migrate.inventory import Topology, load_topology
from tests.helpers import EXAMPLE_INVENTORY, REPO, copy_inventory, edit_yaml

EXAMPLE_V2 = REPO / "inventories" / "example-v2"
DB_PASSWORD = "pg-pass-7f3e9a2c41"
DB_URL = f"postgres://coder:{DB_PASSWORD}@db.internal.example:5433/coderdb?sslmode=verify-full"


def _edit(path: str, **values: Any) -> Callable[[Path], None]:
    def change(inventory: Path) -> None:
        edit_yaml(inventory / path, lambda data: data.update(values))

    return change


def _validate(tmp_path: Path, source: Path, *changes: Callable[[Path], None]) -> list[str]:
    inventory = copy_inventory(tmp_path, source)
    for change in changes:
        change(inventory)
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])
    assert result.exit_code == 3, result.output
    return result.stderr.strip().splitlines()


def _topology(tmp_path: Path, source: Path, *changes: Callable[[Path], None]) -> Topology:
    inventory = copy_inventory(tmp_path, source)
    for change in changes:
        change(inventory)
    return load_topology(inventory)


# -- inventory rules --------------------------------------------------------------------------

RULES = [
    # (id, inventory, changes, file, owner, key, expected)
    ("v1-nlb-needs-1.21.1", EXAMPLE_INVENTORY,
     [_edit("host_vars/eu-west.yml", coder_load_balancer={"kind": "aws-nlb"})],
     "host_vars/eu-west.yml", "eu-west", "coder_load_balancer.kind",
     "before 1.21.1 (coderd.serviceAnnotations)"),
    ("v1-annotations-need-1.21.1", EXAMPLE_INVENTORY,
     [_edit("host_vars/eu-west.yml", coder_load_balancer={
         "kind": "azure-lb", "annotations": {"service.beta.kubernetes.io/azure-dns-label-name":
                                             "coder-eu"}})],
     "host_vars/eu-west.yml", "eu-west", "coder_load_balancer.annotations", "1.21.1"),
    ("v1-ingress-kind", EXAMPLE_INVENTORY,
     [_edit("host_vars/eu-west.yml", coder_load_balancer={"kind": "gcp-https"})],
     "host_vars/eu-west.yml", "eu-west", "coder_load_balancer.kind", "arrives in 1.26.0"),
    ("v1-zones", EXAMPLE_INVENTORY,
     [_edit("host_vars/eu-west.yml", coder_zones=["eu-west-1a", "eu-west-1b"])],
     "host_vars/eu-west.yml", "eu-west", "coder_zones", "coderd.affinity arrives in 1.25.0"),
    ("unknown-kind", EXAMPLE_V2,
     [_edit("host_vars/sydney.yml", coder_load_balancer={"kind": "aws-alb"})],
     "host_vars/sydney.yml", "sydney", "coder_load_balancer.kind", "'aws-nlb'"),
    ("ingress-source-ranges", EXAMPLE_V2,
     [_edit("host_vars/sydney.yml", coder_load_balancer={
         "kind": "gcp-https", "source_ranges": ["203.0.113.0/24"]})],
     "host_vars/sydney.yml", "sydney", "coder_load_balancer.source_ranges", "Cloud Armor"),
    ("none-source-ranges", EXAMPLE_V2,
     [_edit("host_vars/sydney.yml", coder_load_balancer={
         "kind": "none", "source_ranges": ["203.0.113.0/24"]})],
     "host_vars/sydney.yml", "sydney", "coder_load_balancer.source_ranges",
     "kind none makes no load balancer"),
    ("gcp-ssl-needs-tls", EXAMPLE_V2,
     [_edit("host_vars/sydney.yml", coder_load_balancer={"kind": "gcp-ssl"},
            coder_tls=None)],
     "host_vars/sydney.yml", "sydney", "coder_tls", "Coder terminates TLS"),
    ("bad-zone", EXAMPLE_V2, [_edit("host_vars/sydney.yml", coder_zones=["ap southeast 2a"])],
     "host_vars/sydney.yml", "sydney", "coder_zones[0]", "topology.kubernetes.io/zone"),
    ("bad-annotation-key", EXAMPLE_V2,
     [_edit("host_vars/sydney.yml", coder_load_balancer={
         "kind": "aws-clb", "annotations": {"not a key": "x"}})],
     "host_vars/sydney.yml", "sydney", "coder_load_balancer.annotations.not a key",
     "annotation key"),
    ("fewer-replicas-than-zones", EXAMPLE_V2,
     [_edit("host_vars/sydney.yml", coder_zones=["a1", "a2", "a3"])],
     "group_vars/coder_regions/region.yml", "sydney", "coder_values.coder.replicaCount",
     "one replica per zone (3"),
    ("owned-service-value", EXAMPLE_V2,
     [_edit("host_vars/sydney.yml", coder_values={"coder": {"service": {"type": "NodePort"}}})],
     "host_vars/sydney.yml", "sydney", "coder_values.coder.service.type",
     "sets it from coder_load_balancer"),
    ("owned-database-env", EXAMPLE_V2,
     [_edit("host_vars/primary.yml", coder_values={"coder": {"env": [
         {"name": "CODER_PG_CONNECTION_URL", "value": "x"}]}})],
     "host_vars/primary.yml", "primary", "coder_values.coder.env",
     "sets it from coder_database"),
    ("database-literal", EXAMPLE_V2,
     [_edit("host_vars/primary.yml", coder_database={"url": DB_URL})],
     "host_vars/primary.yml", "primary", "coder_database.url", "secret reference"),
    ("database-file-in-inventory", EXAMPLE_V2,
     [_edit("host_vars/primary.yml", coder_database={"url": {"file": "pg-url"}})],
     "host_vars/primary.yml", "primary", "coder_database.url.file",
     "outside the inventory directory"),
    ("database-on-a-region", EXAMPLE_V2,
     [_edit("host_vars/sydney.yml", coder_database={"url": {"env": "PG_URL"}})],
     "host_vars/sydney.yml", "sydney", "coder_database", "of the primary only"),
]


@pytest.mark.parametrize("rule", RULES, ids=[r[0] for r in RULES])
def test_each_rule_is_one_line_naming_file_key_expected(
    rule: tuple[Any, ...], tmp_path: Path
) -> None:
    _, source, changes, file, owner, key, expected = rule
    lines = _validate(tmp_path, source, *changes)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {file}: {owner}: {key}: expected"), lines[0]
    assert expected in lines[0], lines[0]
    assert DB_PASSWORD not in lines[0]


# -- load balancer values ------------------------------------------------------------------

V2_SERVICE = {
    "aws-nlb": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                "annotations": {NLB_ANNOTATION: "nlb"}},
    "aws-clb": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "annotations": {}},
    "gcp-ssl": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "annotations": {}},
    "azure-lb": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "annotations": {}},
    "gcp-https": {"type": "NodePort", "annotations": {}},
    "azure-appgw": {"type": "ClusterIP", "annotations": {}},
    "none": {"type": "ClusterIP", "annotations": {}},
}


@pytest.mark.parametrize("kind", sorted(V2_SERVICE))
def test_v2_kind_renders_coder_service_and_ingress(kind: str, tmp_path: Path) -> None:
    topology = _topology(tmp_path, EXAMPLE_V2,
                         _edit("host_vars/sydney.yml", coder_load_balancer={"kind": kind}))
    values = release_values(topology, topology.region("sydney"))
    service = values["coder"]["service"]
    expected = {"enable": True, "sessionAffinity": "None", **V2_SERVICE[kind]}
    assert service == expected
    assert "service" not in values and "ingress" not in values  # never top-level
    ingress = values["coder"].get("ingress")
    if kind == "gcp-https":
        assert ingress["annotations"] == {"kubernetes.io/ingress.class": "gce"}
        assert "className" not in ingress
    elif kind == "azure-appgw":
        assert ingress["className"] == "azure-application-gateway"
    else:
        assert ingress is None
        return
    assert ingress["enable"] is True
    assert ingress["host"] == "sydney.example.com"
    assert ingress["wildcardHost"] == "*.sydney.example.com"
    assert ingress["tls"] == {"enable": True, "secretName": "coder-proxy-tls",
                              "wildcardSecretName": "coder-proxy-wildcard-tls"}


def test_v2_source_ranges_and_annotations_go_on_the_service(tmp_path: Path) -> None:
    topology = _topology(tmp_path, EXAMPLE_V2, _edit("host_vars/sydney.yml", coder_load_balancer={
        "kind": "aws-nlb", "source_ranges": ["203.0.113.0/24", "198.51.100.0/25"],
        "annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}}))
    region = topology.region("sydney")
    annotations = release_values(topology, region)["coder"]["service"]["annotations"]
    assert annotations == {
        NLB_ANNOTATION: "nlb",
        "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
        SOURCE_RANGES_ANNOTATION: "203.0.113.0/24,198.51.100.0/25",
    }
    assert service_shape(topology, region) == (
        "aws-nlb: Service LoadBalancer, externalTrafficPolicy Local, sessionAffinity None, "
        "source ranges 203.0.113.0/24, 198.51.100.0/25, annotations "
        f"{NLB_ANNOTATION}=nlb, service.beta.kubernetes.io/aws-load-balancer-internal=true")


V1_SPEC = {
    "aws-clb": {"type": "LoadBalancer", "sessionAffinity": "None",
                "externalTrafficPolicy": "Cluster"},
    "gcp-ssl": {"type": "LoadBalancer", "sessionAffinity": "None",
                "externalTrafficPolicy": "Local"},
    "azure-lb": {"type": "LoadBalancer", "sessionAffinity": "None",
                 "externalTrafficPolicy": "Cluster"},
    # 1.21.0's default externalTrafficPolicy Local (enterprise-helm 1.21.0 values.yaml:15) is
    # refused on a ClusterIP Service.
    "none": {"type": "ClusterIP", "externalTrafficPolicy": ""},
}


@pytest.mark.parametrize("kind", sorted(V1_SPEC))
def test_v1_kind_renders_coderd_service_spec(kind: str, tmp_path: Path) -> None:
    ranges = {"source_ranges": ["203.0.113.0/26"]} if kind != "none" else {}
    topology = _topology(tmp_path, EXAMPLE_INVENTORY, _edit(
        "host_vars/eu-west.yml", coder_load_balancer={"kind": kind, **ranges}))
    coderd = release_values(topology, topology.region("eu-west"))["coderd"]
    expected = {**V1_SPEC[kind]}
    if ranges:
        expected["loadBalancerSourceRanges"] = ["203.0.113.0/26"]
    assert coderd["serviceSpec"] == expected
    assert "serviceAnnotations" not in coderd


def test_v1_chart_1_21_1_takes_service_annotations(tmp_path: Path) -> None:
    def chart(inventory: Path) -> None:
        edit_yaml(inventory / "group_vars/all/coder.yml",
                  lambda d: d["coder_chart"].update(version="1.21.1"))

    topology = _topology(tmp_path, EXAMPLE_INVENTORY, chart, _edit(
        "host_vars/eu-west.yml", coder_load_balancer={"kind": "aws-nlb"}))
    coderd = release_values(topology, topology.region("eu-west"))["coderd"]
    assert coderd["serviceAnnotations"] == {NLB_ANNOTATION: "nlb"}
    assert coderd["serviceSpec"]["externalTrafficPolicy"] == "Local"


# -- zones -----------------------------------------------------------------------------------


def test_v2_zones_spread_replicas_with_a_disruption_budget(tmp_path: Path) -> None:
    topology = load_topology(EXAMPLE_V2)
    values = release_values(topology, topology.primary)
    coder = values["coder"]
    zones = ["us-east-1a", "us-east-1b", "us-east-1c"]
    selector = {"app.kubernetes.io/name": "coder", "app.kubernetes.io/instance": "coder"}
    assert coder["replicaCount"] == 3
    assert coder["topologySpreadConstraints"] == [{
        "maxSkew": 1, "topologyKey": ZONE_LABEL, "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": selector}}]
    terms = coder["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": ZONE_LABEL, "operator": "In", "values": zones}]
    [budget] = values["extraTemplates"]
    assert budget["kind"] == "PodDisruptionBudget"
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}


def test_replicas_may_exceed_zones(tmp_path: Path) -> None:
    topology = _topology(tmp_path, EXAMPLE_V2,
                         _edit("host_vars/sydney.yml", coder_zones=["a1", "a2"]))
    assert release_values(topology, topology.region("sydney"))["coder"]["replicaCount"] == 2


# -- the database ----------------------------------------------------------------------------


def _db_topology(tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch) -> Topology:
    monkeypatch.setenv("CM_TEST_PG_URL", DB_URL)
    return _topology(tmp_path, source, _edit(
        "host_vars/primary.yml", coder_database={"url": {"env": "CM_TEST_PG_URL"}}))


def test_v2_database_is_a_secret_reference_in_coder_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = _db_topology(tmp_path, EXAMPLE_V2, monkeypatch)
    env = {e["name"]: e for e in release_values(topology, topology.primary)["coder"]["env"]}
    assert env["CODER_PG_CONNECTION_URL"] == {
        "name": "CODER_PG_CONNECTION_URL",
        "valueFrom": {"secretKeyRef": {"name": DATABASE_SECRET, "key": "url"}}}
    assert DB_PASSWORD not in json.dumps(release_values(topology, topology.primary))


def test_v1_database_disables_the_in_cluster_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = _db_topology(tmp_path, EXAMPLE_INVENTORY, monkeypatch)
    postgres = release_values(topology, topology.primary)["postgres"]
    assert postgres == {
        "host": "db.internal.example", "port": "5433", "user": "coder", "database": "coderdb",
        "sslMode": "verify-full", "passwordSecret": DATABASE_SECRET,
        "default": {"enable": False}}


def _empty_world(topology: Topology, *, stored: str = "") -> World:
    sites = {s.name: SiteState(name=s.name, namespace_exists=False, release=None)
             for s in (topology.primary, *topology.regions)}
    sites[topology.primary.name] = SiteState(
        name=topology.primary.name, namespace_exists=True, release=None, database_stored=stored)
    return World(sites=sites, records=PrimaryRecords(reachable=False), managed={})


@pytest.mark.parametrize("source", [EXAMPLE_INVENTORY, EXAMPLE_V2], ids=["v1", "v2"])
def test_plan_writes_the_database_secret_before_the_release_never_showing_it(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = _db_topology(tmp_path, source, monkeypatch)
    plan = plan_deploy(topology, _empty_world(topology), limit=[topology.primary.name])
    changes = plan.effective_changes
    kinds = [c.kind for c in changes]
    assert kinds == ["DatabaseSecret", "HelmRelease"]
    database, release = changes
    assert isinstance(database, DatabaseSecretChange) and database.action.value == "create"
    assert database.id in release.depends_on
    text = plan.model_dump_json()
    for part in (DB_PASSWORD, DB_URL, "db.internal.example", "coderdb"):
        assert part not in text


def test_a_current_database_secret_is_no_change_a_different_one_is_updated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = _db_topology(tmp_path, EXAMPLE_V2, monkeypatch)
    primary = [topology.primary.name]
    waves, _ = deploy_waves(topology, _empty_world(topology, stored="current"), limit=primary)
    assert "DatabaseSecret" not in [c.kind for w in waves for c in w.changes]
    waves, _ = deploy_waves(topology, _empty_world(topology, stored="differs"), limit=primary)
    [change] = [c for w in waves for c in w.changes if c.kind == "DatabaseSecret"]
    assert change.action.value == "update"


def test_a_url_without_a_password_is_refused_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CM_TEST_PG_URL", "postgres://db.internal.example/coderdb")
    topology = _topology(tmp_path, EXAMPLE_INVENTORY, _edit(
        "host_vars/primary.yml", coder_database={"url": {"env": "CM_TEST_PG_URL"}}))
    with pytest.raises(PlanError, match="env CM_TEST_PG_URL") as caught:
        release_values(topology, topology.primary)
    assert "db.internal.example" not in str(caught.value)


def test_plan_shows_each_sites_service_shape(tmp_path: Path) -> None:
    topology = load_topology(EXAMPLE_V2)
    world = World(sites={s.name: SiteState(name=s.name, namespace_exists=False, release=None)
                         for s in (topology.primary, *topology.regions)},
                  records=PrimaryRecords(reachable=False), managed={})
    monkey = pytest.MonkeyPatch()
    monkey.setenv("CODER_PG_CONNECTION_URL", DB_URL)
    try:
        waves, _ = deploy_waves(topology, world)
    finally:
        monkey.undo()
    reasons = {c.region: c.reason for w in waves for c in w.changes if c.kind == "HelmRelease"}
    assert reasons["sydney"].endswith(
        "load balancer aws-clb: Service LoadBalancer, externalTrafficPolicy Cluster, "
        "sessionAffinity None, source ranges 203.0.113.0/24")
    assert reasons["primary"].endswith(
        f"load balancer aws-nlb: Service LoadBalancer, externalTrafficPolicy Local, "
        f"sessionAffinity None, annotations {NLB_ANNOTATION}=nlb; 3 zones (us-east-1a, "
        "us-east-1b, us-east-1c)")


# -- the lab's load-balancer controller ------------------------------------------------------


def test_lab_gives_unprovisioned_load_balancers_an_address() -> None:
    from coder_migrate.lab.load_balancers import LAB_LOAD_BALANCER_IP, unprovisioned
    from coder_migrate.lab.paths import StateLayout
    from coder_migrate.lab.pods import supervisor_command

    def service(name: str, kind: str, ip: str = "", ingress: bool = False) -> dict[str, Any]:
        status = {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}} if ingress else {}
        return {"metadata": {"namespace": "coder", "name": name},
                "spec": {"type": kind, **({"loadBalancerIP": ip} if ip else {})},
                "status": status}

    assert unprovisioned([
        service("a", "LoadBalancer"), service("b", "LoadBalancer", ip="192.0.2.9"),
        service("c", "LoadBalancer", ingress=True), service("d", "ClusterIP"),
        service("e", "NodePort"),
    ]) == [("coder", "a", LAB_LOAD_BALANCER_IP), ("coder", "b", "192.0.2.9")]
    command = supervisor_command(StateLayout(Path("/tmp/lab")), {"us-east": "lab-us-east"},
                                 load_balancers=["lab-primary", "lab-us-east"])
    assert command[-4:] == ["--load-balancers", "lab-primary", "--load-balancers", "lab-us-east"]


def test_each_lab_cluster_has_a_kwok_node_per_zone() -> None:
    from coder_migrate.lab.clusters import _kwok_node, zone_nodes

    assert zone_nodes() == [("kwok-node-0", "zone-a"), ("kwok-node-1", "zone-b"),
                            ("kwok-node-2", "zone-c")]
    labels = _kwok_node("kwok-node-1", "zone-b")["metadata"]["labels"]
    assert labels[ZONE_LABEL] == "zone-b" and labels["kubernetes.io/hostname"] == "kwok-node-1"


def test_the_v1_password_alone_is_scrubbed_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coder_migrate import sensitive

    topology = _db_topology(tmp_path, EXAMPLE_INVENTORY, monkeypatch)
    release_values(topology, topology.primary)
    assert DB_PASSWORD not in sensitive.scrub(f"helm said: password {DB_PASSWORD} refused")
