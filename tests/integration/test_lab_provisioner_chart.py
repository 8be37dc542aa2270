"""Golden tests of the ``coder-provisioner`` stand-in (coder-v2/coder-provisioner), rendered with
the lab's helm, each asserting a fact of the real chart cited by file and line:
coder/coder ``helm/provisioner/templates/_coder.tpl`` (1b46d83b) and the chart's golden
``helm/provisioner/tests/testdata/provisionerd_psk.golden`` (08b4aa4c) for
``provisionerd_psk.yaml`` (0e8b89a5); the primary's side, ``CODER_PROVISIONER_DAEMON_PSK`` from
``provisionerDaemon.pskSecretName`` key ``psk``, is in ``reference/real-charts.md``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coder_migrate.engine.kinds.provisioner_release import provisioner_values
from coder_migrate.engine.values import release_values
from coder_migrate.inventory import load_topology
from tests.helpers import REPO, copy_inventory, edit_yaml
from tests.integration.test_lab_charts import container, find, refused, render

pytestmark = pytest.mark.integration

CHART = "coder-provisioner"


def env_list(docs: list[dict[str, object]]) -> list[dict[str, object]]:
    return list(container(find(docs, "Deployment", "coder-provisioner"))["env"])


def test_psk_and_tags_as_the_real_golden(tmp_path: Path) -> None:
    """provisionerd_psk.yaml (pskSecretName not-the-default..., tags location: auh,
    clusterType: k8s) renders, as the golden does, args provisionerd start (_coder.tpl:36-37),
    CODER_PROMETHEUS_ADDRESS first (:40-41), the PSK from the Secret's key psk (:56-60), tags
    sorted by key and joined k=v with ',' (:63-64 and the provisioner.tags helper), then the
    default CODER_URL (:74-77)."""
    docs = render(CHART, values={
        "provisionerDaemon": {"pskSecretName": "not-the-default-coder-provisioner-psk",
                              "tags": {"location": "auh", "clusterType": "k8s"}}}, tmp=tmp_path)
    spec = container(find(docs, "Deployment", "coder-provisioner"))
    assert (spec["command"], spec["args"]) == (["/opt/coder"], ["provisionerd", "start"])
    assert env_list(docs) == [
        {"name": "CODER_PROMETHEUS_ADDRESS", "value": "0.0.0.0:2112"},
        {"name": "CODER_PROVISIONER_DAEMON_PSK", "valueFrom": {"secretKeyRef": {
            "name": "not-the-default-coder-provisioner-psk", "key": "psk"}}},
        {"name": "CODER_PROVISIONERD_TAGS", "value": "clusterType=k8s,location=auh"},
        {"name": "CODER_URL", "value": "http://coder.coder-satellite.svc.cluster.local"},
    ]
    deployment = find(docs, "Deployment", "coder-provisioner")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 600
    assert {("ServiceAccount", "coder-provisioner"), ("RoleBinding", "coder-provisioner"),
            ("Role", "coder-provisioner-workspace-perms")} <= {
        (d["kind"], d["metadata"]["name"]) for d in docs}
    # The chart never creates the PSK's Secret: it only references it.
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_no_psk_secret_name_fails_as_the_real_chart(tmp_path: Path) -> None:
    """_coder.tpl:42-43: neither pskSecretName nor keySecretName fails the render."""
    stderr = refused(CHART, "provisionerDaemon.pskSecretName=", tmp=tmp_path)
    assert "Either provisionerDaemon.pskSecretName or provisionerDaemon.keySecretName" in stderr


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    stderr = refused(CHART, "provisionerDaemon.psk=inline", tmp=tmp_path)
    assert "refused: coder-v2/coder-provisioner 2.15.0 has no such value" in stderr


def test_the_toolkits_values_render_the_region_and_the_primary_takes_the_key(
    tmp_path: Path,
) -> None:
    inventory = copy_inventory(tmp_path, REPO / "inventories" / "lab-v2")
    edit_yaml(inventory / "host_vars" / "eu-west.yml", lambda d: d.update(
        coder_provisioners={"replicas": 3, "tags": {"region": "eu-west", "cloud": "aws"}}))
    topology = load_topology(inventory)
    region = topology.region("eu-west")
    docs = render(CHART, values=provisioner_values(topology, region, "sha256:0123456789abcdef"),
                  tmp=tmp_path)
    deployment = find(docs, "Deployment", "coder-provisioner")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["metadata"]["annotations"][
        "coder-migrate/provisioner-psk"] == "sha256:0123456789abcdef"
    env = {e["name"]: e for e in env_list(docs)}
    assert env["CODER_URL"]["value"] == topology.primary.access_url
    assert env["CODER_PROVISIONERD_TAGS"]["value"] == "cloud=aws,region=eu-west"
    assert env["CODER_PROVISIONER_DAEMON_PSK"]["valueFrom"]["secretKeyRef"] == {
        "name": "coder-provisioner-psk", "key": "psk"}
    # The primary's coder-v2 chart reads the same Secret (real-charts.md, "external
    # provisioners"): CODER_PROVISIONER_DAEMON_PSK from provisionerDaemon.pskSecretName.
    primary = render("coder-v2", values=release_values(topology, topology.primary), tmp=tmp_path)
    primary_env = {e["name"]: e for e in container(find(primary, "Deployment", "coder"))["env"]}
    assert primary_env["CODER_PROVISIONER_DAEMON_PSK"]["valueFrom"]["secretKeyRef"] == {
        "name": "coder-provisioner-psk", "key": "psk"}
