"""Reading releases from helm's storage gives what helm itself reports.

The engine reads a release (chart, status, revision, user values) from its storage Secret
through the kube client instead of starting ``helm list`` and ``helm get values``. These
tests install real releases with the lab's helm into a namespace of their own and compare
the two readings through each stage of a release's life: first install, upgrade with other
values, an install interrupted by SIGKILL (``pending-install``), and uninstall.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as kube_client

from coder_migrate.providers.helm import HelmClient, ReleaseState
from coder_migrate.providers.kube import KubeCluster
from tests.fixtures.lab import Helm, LabHandle, temporary_namespace

pytestmark = pytest.mark.integration

CONTEXT = "lab-us-east"
CHART = Path(__file__).resolve().parents[2] / "coder_migrate" / "lab" / "charts" / (
    "workspace-provider"
)
RELEASE = "provider"
# What coder/workspace-provider requires (its chart fails without them), with no nginx
# ingress: its LoadBalancer Service gets no address in the lab.
REQUIRED = {
    "envproxy": {"accessURL": "https://provider.lab.internal",
                 "clusterAddress": "https://kubernetes.default.svc"},
    "cemanager": {"accessURL": "http://127.0.0.1:17080"},
    "ingress": {"useDefault": False},
}


@pytest.fixture
def namespace(lab: LabHandle, helm: Helm) -> Iterator[str]:
    with temporary_namespace(lab, helm, CONTEXT, "helm-storage") as name:
        yield name


def both_readings(lab: LabHandle, namespace: str) -> tuple[ReleaseState | None, ...]:
    kubeconfig = str(lab.kubeconfig)
    from_storage = HelmClient(
        CONTEXT, kubeconfig, storage=KubeCluster(CONTEXT, kubeconfig)
    )
    from_helm = HelmClient(CONTEXT, kubeconfig)

    async def read() -> tuple[ReleaseState | None, ...]:
        return tuple(
            await asyncio.gather(
                from_storage.release(namespace, RELEASE), from_helm.release(namespace, RELEASE)
            )
        )

    return asyncio.run(read())


def install_command(helm: Helm, namespace: str, values_file: Path) -> list[str]:
    return [
        str(helm.binary), "--kubeconfig", str(helm.kubeconfig), "--kube-context", CONTEXT,
        "upgrade", "--install", RELEASE, str(CHART), "-n", namespace, "-f", str(values_file),
        "--wait", "--timeout", "60s",
    ]


def test_storage_reading_matches_helm_through_install_upgrade_and_uninstall(
    lab: LabHandle, helm: Helm, namespace: str, tmp_path: Path
) -> None:
    assert both_readings(lab, namespace) == (None, None)

    values_file = tmp_path / "values.yaml"
    first = {**REQUIRED,
             "envproxy": {**REQUIRED["envproxy"], "token": "envproxy-token-first-51ac",
                          "replicas": 1},
             "environments": {"tolerations": [{"key": "a"}, {"key": "two"}]}}
    second = {**REQUIRED,
              "envproxy": {**REQUIRED["envproxy"], "token": "envproxy-token-second-c04f"}}
    for revision, values in ((1, first), (2, second)):
        values_file.write_text(yaml.safe_dump(values))
        subprocess.run(install_command(helm, namespace, values_file), check=True,
                       capture_output=True)
        storage, cli = both_readings(lab, namespace)
        assert storage is not None and storage == cli
        assert (storage.status, storage.revision, storage.values) == ("deployed", revision, values)
        assert storage.chart_name == "workspace-provider"

    helm.run(CONTEXT, "uninstall", RELEASE, "-n", namespace, "--wait")
    assert both_readings(lab, namespace) == (None, None)


def test_an_install_killed_midway_reads_as_pending_install_both_ways(
    lab: LabHandle, helm: Helm, namespace: str, tmp_path: Path
) -> None:
    # No pod may start in the namespace, so helm's --wait never ends: the release stays
    # pending-install until helm is killed, as after a killed apply.
    with lab.api(CONTEXT) as api:
        kube_client.CoreV1Api(api).create_namespaced_resource_quota(
            namespace,
            kube_client.V1ResourceQuota(
                metadata=kube_client.V1ObjectMeta(name="no-pods"),
                spec=kube_client.V1ResourceQuotaSpec(hard={"pods": "0"}),
            ),
        )
    values_file = tmp_path / "values.yaml"
    slow_token = {**REQUIRED["envproxy"], "token": "envproxy-token-slow-9d3e"}
    values_file.write_text(yaml.safe_dump({**REQUIRED, "envproxy": slow_token}))
    command = install_command(helm, namespace, values_file)
    command[command.index("--timeout") + 1] = "300s"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            storage, cli = both_readings(lab, namespace)
            if storage is not None:
                break
            time.sleep(0.1)
        else:
            pytest.fail("helm never recorded the release")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    storage, cli = both_readings(lab, namespace)
    assert storage is not None and storage == cli
    assert storage.status == "pending-install" and storage.pending
