"""Seed 004 on the lab: each ``coder_load_balancer`` kind and ``coder_zones``, rendered by the
engine (``release_values``, what ``apply`` installs), installed with the lab's helm from the
stand-in charts, and read back from the lab's kube-apiserver: the Service (and Ingress) each
kind makes, the replicas the real kube-scheduler spreads over the lab's zone-labelled kwok
nodes, the PodDisruptionBudget, and what ``status`` reports for them (the Service's address,
replicas ready per zone). The v1 chart 1.21.0's refusals are checked through
``inventory validate``.

Real parts: a private lab (own state, ports +13500, no region) started as ``lab up`` starts
it, helm, the stand-in charts, kube-apiserver, kube-scheduler, kwok, the lab's stand-in
load-balancer controller, the Coder emulator and the ``coder-migrate`` command.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kubernetes import client as kube_client

from coder_migrate.cli import main
from coder_migrate.engine.infra import NLB_ANNOTATION, SOURCE_RANGES_ANNOTATION, ZONE_LABEL
from coder_migrate.engine.values import release_values
from coder_migrate.inventory import Topology, load_topology
from coder_migrate.lab.load_balancers import LAB_LOAD_BALANCER_IP
from coder_migrate.lab.paths import CacheLayout, StateLayout
from coder_migrate.lab.runtime import Lab
from coder_migrate.lab.settings import LAB_ZONES, LabSettings
from coder_migrate.lab.tools import helm_binary
from coder_migrate.providers.kube import KubeCluster
from tests.fixtures.lab import Helm, kube_api, start_lab
from tests.helpers import (
    EXAMPLE_INVENTORY,
    REPO,
    PrivateLab,
    copy_inventory,
    edit_yaml,
    relocated_inventory,
    wait_for,
)

pytestmark = pytest.mark.integration

CHARTS = REPO / "coder_migrate" / "lab" / "charts"
EXAMPLE_V2 = REPO / "inventories" / "example-v2"
# Offset 13500: clear of the shared lab, test_lab_lifecycle (1000-1200), test_lab_pods (2500),
# the README v2 path (3000) and test_lab_primary_release (3300).
SETTINGS = LabSettings.create(regions=0, port_offset=13500, coder_mode="v2")
CONTEXT = SETTINGS.clusters[0].context
RANGES = ["203.0.113.0/24"]


class LabCluster:
    def __init__(self, state: StateLayout, helm: Helm) -> None:
        self.state = state
        self.helm = helm

    def install(self, namespace: str, chart: str, values: dict[str, Any], tmp: Path,
                release: str) -> None:
        """Install as ``apply`` does: the site's release name, the engine's values."""
        path = tmp / f"{namespace}.json"
        path.write_text(json.dumps(values))
        self.helm.run(CONTEXT, "upgrade", "--install", release, str(CHARTS / chart),
                      "-n", namespace, "--create-namespace", "-f", str(path))

    def read(self, what: Callable[[kube_client.ApiClient], Any]) -> Any:
        with kube_api(self.state.kubeconfig, CONTEXT) as api:
            return what(api)

    def service(self, namespace: str, name: str) -> kube_client.V1Service:
        return self.read(lambda api: kube_client.CoreV1Api(api).read_namespaced_service(
            name, namespace))

    def ingress(self, namespace: str) -> kube_client.V1Ingress | None:
        def read(api: kube_client.ApiClient) -> kube_client.V1Ingress | None:
            items = kube_client.NetworkingV1Api(api).list_namespaced_ingress(namespace).items
            return items[0] if items else None

        return self.read(read)

    def kube(self) -> KubeCluster:
        return KubeCluster(CONTEXT, str(self.state.kubeconfig))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    state = StateLayout(tmp_path_factory.mktemp("lb") / "lab")
    try:
        start_lab(state, SETTINGS)
        yield LabCluster(state, Helm(binary=helm_binary(), kubeconfig=state.kubeconfig))
    finally:
        Lab(state, CacheLayout.default()).down()


def _own(annotations: dict[str, str] | None) -> dict[str, str]:
    """The object's annotations without those helm adds to everything it installs."""
    return {k: v for k, v in (annotations or {}).items() if not k.startswith("meta.helm.sh/")}


def _topology(tmp: Path, source: Path, host: str, **keys: Any) -> Topology:
    inventory = copy_inventory(tmp, source)
    # The example's own database reference is not the subject here (keys may set one).
    edit_yaml(inventory / "host_vars" / "primary.yml",
              lambda data: data.pop("coder_database", None))
    edit_yaml(inventory / "host_vars" / f"{host}.yml", lambda data: data.update(keys))
    return load_topology(inventory)


V2_KINDS = {
    # kind: (Service type, externalTrafficPolicy, annotations, Ingress class)
    "aws-nlb": ("LoadBalancer", "Local",
                {NLB_ANNOTATION: "nlb", SOURCE_RANGES_ANNOTATION: RANGES[0]}, None),
    "aws-clb": ("LoadBalancer", "Cluster", {SOURCE_RANGES_ANNOTATION: RANGES[0]}, None),
    "gcp-ssl": ("LoadBalancer", "Local", {SOURCE_RANGES_ANNOTATION: RANGES[0]}, None),
    "azure-lb": ("LoadBalancer", "Cluster", {SOURCE_RANGES_ANNOTATION: RANGES[0]}, None),
    "gcp-https": ("NodePort", None, {}, "gce"),
    "azure-appgw": ("ClusterIP", None, {}, "azure-application-gateway"),
    "none": ("ClusterIP", None, {}, None),
}


@pytest.mark.parametrize("kind", sorted(V2_KINDS))
def test_v2_kind_applied_and_read_back(kind: str, cluster: LabCluster, tmp_path: Path) -> None:
    lb: dict[str, Any] = {"kind": kind}
    if kind not in ("gcp-https", "azure-appgw", "none"):
        lb["source_ranges"] = RANGES
    topology = _topology(tmp_path, EXAMPLE_V2, "sydney", coder_load_balancer=lb)
    namespace = f"lb-v2-{kind}"
    region = topology.region("sydney")
    cluster.install(namespace, "coder-v2", release_values(topology, region), tmp_path,
                    region.release)

    service_type, policy, annotations, ingress_class = V2_KINDS[kind]
    service = cluster.service(namespace, "coder")
    assert service.spec.type == service_type
    assert service.spec.session_affinity == "None"
    if policy is not None:
        assert service.spec.external_traffic_policy == policy
    assert _own(service.metadata.annotations) == annotations
    address = asyncio.run(cluster.kube().service_address(namespace, "coder"))
    if service_type == "LoadBalancer":
        # The lab's stand-in cloud controller gives it an address (lab/load_balancers.py).
        wait_for(lambda: asyncio.run(cluster.kube().service_address(namespace, "coder"))
                 == f"LoadBalancer {LAB_LOAD_BALANCER_IP}", "the load balancer's address")
    elif service_type == "NodePort":
        assert address and address.startswith("NodePort 3")
    else:
        assert address == f"ClusterIP {service.spec.cluster_ip}"

    ingress = cluster.ingress(namespace)
    if ingress_class is None:
        assert ingress is None
        return
    assert ingress is not None
    hosts = [rule.host for rule in ingress.spec.rules]
    assert hosts == ["sydney.example.com", "*.sydney.example.com"]
    assert [t.secret_name for t in ingress.spec.tls] == [
        "coder-proxy-tls", "coder-proxy-wildcard-tls"]
    if kind == "gcp-https":
        assert _own(ingress.metadata.annotations) == {"kubernetes.io/ingress.class": "gce"}
        assert ingress.spec.ingress_class_name is None
    else:
        assert ingress.spec.ingress_class_name == ingress_class


V1_KINDS = {
    # kind: (Service type, externalTrafficPolicy, sessionAffinity)
    "aws-clb": ("LoadBalancer", "Cluster", "None"),
    "gcp-ssl": ("LoadBalancer", "Local", "None"),
    "azure-lb": ("LoadBalancer", "Cluster", "None"),
    "none": ("ClusterIP", None, "None"),
}


@pytest.mark.parametrize("kind", sorted(V1_KINDS))
def test_v1_kind_applied_and_read_back(kind: str, cluster: LabCluster, tmp_path: Path) -> None:
    lb: dict[str, Any] = {"kind": kind}
    if kind != "none":
        lb["source_ranges"] = RANGES
    topology = _topology(tmp_path, EXAMPLE_INVENTORY, "eu-west", coder_load_balancer=lb)
    namespace = f"lb-v1-{kind}"
    region = topology.region("eu-west")
    cluster.install(namespace, "coder-v1", release_values(topology, region), tmp_path,
                    region.release)
    service_type, policy, affinity = V1_KINDS[kind]
    # 1.21.0 in a fresh namespace: the `coderd` Service with coderd.serviceSpec as written
    # (coder/enterprise-helm 1.21.0, 3a9b365c, templates/coderd.yaml:237 `toYaml
    # .Values.coderd.serviceSpec`; values.yaml:9-22 its type, externalTrafficPolicy,
    # loadBalancerIP, loadBalancerSourceRanges); no annotations (the metadata, :229-235, has
    # none; coderd.serviceAnnotations arrives in 1.21.1, values.yaml:25).
    service = cluster.service(namespace, "coderd")
    assert service.spec.type == service_type
    assert service.spec.external_traffic_policy == policy
    assert service.spec.session_affinity == affinity
    assert service.spec.load_balancer_source_ranges == (RANGES if kind != "none" else None)
    assert _own(service.metadata.annotations) == {}


@pytest.mark.parametrize(("kind", "expected"), [
    ("aws-nlb", "coder_load_balancer.kind: expected no Service annotations with coder/coder "
                "1.21.0"),
    ("gcp-https", "coder_load_balancer.kind: expected a Service kind with coder/coder 1.21.0"),
    ("azure-appgw", "coder_load_balancer.kind: expected a Service kind with coder/coder 1.21.0"),
])
def test_v1_1_21_0_refuses_what_it_cannot_express(
    kind: str, expected: str, tmp_path: Path
) -> None:
    inventory = copy_inventory(tmp_path, EXAMPLE_INVENTORY)
    edit_yaml(inventory / "host_vars" / "eu-west.yml",
              lambda data: data.update(coder_load_balancer={"kind": kind}))
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])
    assert result.exit_code == 3
    assert f"error: host_vars/eu-west.yml: eu-west: {expected}" in result.stderr
    assert ("1.21.1" if kind == "aws-nlb" else "1.26.0") in result.stderr


def test_zones_spread_replicas_over_the_lab_zones(cluster: LabCluster, tmp_path: Path) -> None:
    zones = list(LAB_ZONES)
    # More replicas than zones (coder_values may raise the count): still spread evenly.
    topology = _topology(tmp_path, EXAMPLE_V2, "sydney",
                         coder_load_balancer={"kind": "aws-nlb"}, coder_zones=zones,
                         coder_values={"coder": {"replicaCount": 2 * len(zones)}})
    region = topology.region("sydney")
    values = release_values(topology, region)
    namespace = "zones-v2"
    cluster.install(namespace, "coder-v2", values, tmp_path, region.release)
    kube = cluster.kube()
    selector = f"app.kubernetes.io/instance={region.release}"

    def spread() -> dict[str, tuple[int, int]] | None:
        by_zone = asyncio.run(kube.ready_by_zone(namespace, selector))
        return by_zone if by_zone == dict.fromkeys(zones, (2, 2)) else None

    # The real kube-scheduler places the pods (DoNotSchedule, maxSkew 1); kwok runs them.
    wait_for(spread, "two ready replicas in each lab zone", timeout=60)

    budget = cluster.read(lambda api: kube_client.PolicyV1Api(
        api).read_namespaced_pod_disruption_budget("coder-proxy-zones", namespace))
    assert budget.spec.max_unavailable == 1
    assert budget.spec.selector.match_labels == {
        "app.kubernetes.io/name": "coder", "app.kubernetes.io/instance": "coder-proxy"}

    deployment = cluster.read(lambda api: kube_client.AppsV1Api(api).read_namespaced_deployment(
        "coder", namespace))
    [constraint] = deployment.spec.template.spec.topology_spread_constraints
    assert constraint.topology_key == ZONE_LABEL
    assert constraint.when_unsatisfiable == "DoNotSchedule"


# -- apply, status and plan through the CLI ---------------------------------------------------

ADDRESS_BLOCK = 71  # the relocated inventory's regions (never deployed here: --limit primary)
DB_PASSWORD = "lab-pg-9c1e4b7a2f"
DB_URL = f"postgres://coder:{DB_PASSWORD}@pg.lab.internal:5432/coder?sslmode=require"


def _cli(lab: PrivateLab, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **lab.environment(), "COLUMNS": "250"}
    # The installed command, so the suite's secret scan (tests/secret_scan.py) reads it too.
    command = Path(sys.executable).parent / "coder-migrate"
    return subprocess.run([str(command), *args], env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_apply_writes_the_database_secret_and_status_shows_service_and_zones(
    cluster: LabCluster, tmp_path: Path
) -> None:
    """``apply --limit primary --no-dns`` of the lab-v2 inventory (DNS is not the subject here)
    with an aws-nlb load balancer, the lab's three zones and the database by file reference;
    then ``status``, an empty ``plan``, and a changed reference rolled out. No output holds the
    URL or its password."""
    lab = PrivateLab(cluster.state.root, SETTINGS.port_offset, ADDRESS_BLOCK)
    inventory = relocated_inventory(REPO / "inventories" / "lab-v2", tmp_path / "lab-v2", lab)
    url_file = tmp_path / "database-secret-url"  # the secret scan reads files named so
    url_file.write_text(DB_URL + "\n")
    url_file.chmod(0o600)

    def primary(data: dict[str, Any]) -> None:
        data.pop("coder_values")  # its coder.service.type is coder_load_balancer's now
        data.update(coder_load_balancer={"kind": "aws-nlb"}, coder_zones=list(LAB_ZONES),
                    coder_database={"url": {"file": str(url_file)}})

    edit_yaml(inventory / "host_vars" / "primary.yml", primary)
    outputs: list[str] = []

    def run(*args: str, code: int = 0) -> str:
        result = _cli(lab, *args)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == code, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    planned = run("plan", "-i", str(inventory), "--limit", "primary", "--no-dns")
    assert "Secret coder-database" in planned
    assert "load balancer aws-nlb: Service LoadBalancer" in planned
    run("apply", "-i", str(inventory), "--limit", "primary", "--no-dns",
        "--auto-approve")

    def secret() -> str:
        found = cluster.read(lambda api: kube_client.CoreV1Api(api).read_namespaced_secret(
            "coder-database", "coder"))
        return base64.b64decode(found.data["url"]).decode()

    assert secret() == DB_URL
    deployment = cluster.read(lambda api: kube_client.AppsV1Api(api).read_namespaced_deployment(
        "coder", "coder"))
    [container] = deployment.spec.template.spec.containers
    [database] = [e for e in container.env if e.name == "CODER_PG_CONNECTION_URL"]
    assert database.value is None
    assert (database.value_from.secret_key_ref.name, database.value_from.secret_key_ref.key) == (
        "coder-database", "url")
    assert _own(cluster.service("coder", "coder").metadata.annotations) == {
        NLB_ANNOTATION: "nlb"}

    [row] = json.loads(run("status", "-i", str(inventory), "--limit", "primary",
                           "--output", "json"))
    assert row["service"] == f"LoadBalancer {LAB_LOAD_BALANCER_IP}"  # the lab's controller
    assert row["zones"] == ", ".join(f"{zone} 1/1" for zone in LAB_ZONES)

    run("plan", "-i", str(inventory), "--limit", "primary", "--no-dns", "--detailed-exitcode")

    url_file.write_text(DB_URL.replace("pg.lab.internal", "pg2.lab.internal") + "\n")
    planned = run("plan", "-i", str(inventory), "--limit", "primary", "--no-dns",
                  "--detailed-exitcode", code=2)
    assert "differs from coder_database.url" in planned
    run("apply", "-i", str(inventory), "--limit", "primary", "--no-dns",
        "--auto-approve")
    assert secret() == DB_URL.replace("pg.lab.internal", "pg2.lab.internal")
    run("plan", "-i", str(inventory), "--limit", "primary", "--no-dns", "--detailed-exitcode")

    for text in outputs:
        assert DB_PASSWORD not in text and "pg.lab.internal" not in text
        assert "pg2.lab.internal" not in text


def test_v1_primary_database_by_reference_applied_and_read_back(
    cluster: LabCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """coder/coder 1.21.0 with coder_database: the external database's env from postgres.*
    (coder/enterprise-helm 1.21.0, 3a9b365c, templates/_common.tpl:27-42 ``coder.postgres.env``:
    DB_HOST, DB_PORT, DB_USER, DB_PASSWORD from postgres.passwordSecret key password
    (:34-38), DB_SSL_MODE, DB_NAME) and no in-cluster timescale (postgres.default.enable,
    values.yaml:159, false: _common.tpl:16 takes the else branch)."""
    monkeypatch.setenv("CM_LAB_PG_URL", DB_URL)
    topology = _topology(tmp_path, EXAMPLE_INVENTORY, "primary",
                         coder_database={"url": {"env": "CM_LAB_PG_URL"}})
    values = release_values(topology, topology.primary)
    namespace = "db-v1"
    cluster.install(namespace, "coder-v1", values, tmp_path, topology.primary.release)
    deployment = cluster.read(lambda api: kube_client.AppsV1Api(api).read_namespaced_deployment(
        "coderd", namespace))
    [container] = deployment.spec.template.spec.containers
    env = {e.name: e for e in container.env}
    assert [env[n].value for n in ("DB_HOST", "DB_PORT", "DB_USER", "DB_SSL_MODE", "DB_NAME")] == [
        "pg.lab.internal", "5432", "coder", "require", "coder"]
    reference = env["DB_PASSWORD"].value_from.secret_key_ref
    assert (reference.name, reference.key) == ("coder-database", "password")
    statefulsets = cluster.read(lambda api: kube_client.AppsV1Api(
        api).list_namespaced_stateful_set(namespace).items)
    assert statefulsets == []
