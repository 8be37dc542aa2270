"""The lab's clusters are real Kubernetes control planes: helm installs, upgrades, rolls back
and uninstalls the stand-in charts in every region, and the pods become Running and Ready.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from coder_migrate.lab import versions
from coder_migrate.lab.settings import DEFAULT_REGIONS
from coder_migrate.lab.tools import StandInChart, chart_path
from tests.fixtures.lab import Helm, LabHandle

pytestmark = pytest.mark.integration

WAIT_SECONDS = 60.0


@pytest.fixture
def namespace() -> str:
    return f"lab-test-{uuid.uuid4().hex[:8]}"


def _pods(api: kube_client.ApiClient, namespace: str, selector: str) -> list[kube_client.V1Pod]:
    core = kube_client.CoreV1Api(api)
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def _is_ready(pod: kube_client.V1Pod) -> bool:
    assert pod.status is not None and pod.metadata is not None
    conditions = {c.type: c.status for c in pod.status.conditions or []}
    return (
        pod.status.phase == "Running"
        and conditions.get("Ready") == "True"
        and pod.metadata.deletion_timestamp is None
    )


def _wait_for_ready_count(
    api: kube_client.ApiClient, namespace: str, selector: str, count: int
) -> list[str]:
    """Wait until exactly COUNT pods match SELECTOR and all are Running and Ready."""
    deadline = time.monotonic() + WAIT_SECONDS
    ready: list[str] = []
    while time.monotonic() < deadline:
        pods = _pods(api, namespace, selector)
        ready = [str(p.metadata.name) for p in pods if p.metadata and _is_ready(p)]
        if len(ready) == count == len(pods):
            return ready
        time.sleep(0.5)
    raise AssertionError(f"expected {count} ready pods for {selector}, found {ready}")


def _delete_namespace(api: kube_client.ApiClient, namespace: str) -> None:
    try:
        kube_client.CoreV1Api(api).delete_namespace(namespace)
    except kube_client.ApiException as error:
        if error.status != 404:
            raise


def _secret_value(api: kube_client.ApiClient, namespace: str, name: str, key: str) -> str:
    secret = kube_client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    assert secret.data is not None
    return str(secret.data[key])


def _release(helm: Helm, context: str, namespace: str, name: str) -> dict[str, Any]:
    result = helm.run(context, "status", name, "--namespace", namespace, "--output", "json")
    return dict(json.loads(result.stdout))


def test_binaries_report_pinned_versions(lab: LabHandle, helm: Helm) -> None:
    assert helm.plain("version", "--template", "{{ .Version }}").stdout == versions.HELM_VERSION
    plugins = helm.plain("plugin", "list").stdout
    assert "diff" in plugins, plugins
    for context in lab.contexts.values():
        with lab.api(context) as api:
            info = kube_client.VersionApi(api).get_code()
        assert info.git_version == versions.KUBERNETES_VERSION, context


def test_one_kubeconfig_with_a_context_per_cluster(lab: LabHandle) -> None:
    contexts, current = kube_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
        str(lab.kubeconfig)
    )
    names = {context["name"] for context in contexts}
    assert names == {"lab-primary", *(f"lab-{region}" for region in DEFAULT_REGIONS)}
    assert current["name"] == "lab-primary"
    # Each context reaches its own cluster: a namespace made in one is absent from the others.
    marker = f"lab-marker-{uuid.uuid4().hex[:8]}"
    with lab.api("lab-us-east") as first:
        body = kube_client.V1Namespace(metadata=kube_client.V1ObjectMeta(name=marker))
        kube_client.CoreV1Api(first).create_namespace(body)
        try:
            for context in ("lab-us-east", "lab-primary", "lab-eu-west"):
                with lab.api(context) as other:
                    found = kube_client.CoreV1Api(other).list_namespace().items
                names = {ns.metadata.name for ns in found if ns.metadata}
                assert (marker in names) == (context == "lab-us-east"), context
        finally:
            _delete_namespace(first, marker)


@pytest.mark.parametrize("region", DEFAULT_REGIONS)
def test_satellite_chart_install_upgrade_rollback_uninstall(
    lab: LabHandle, helm: Helm, region: str, namespace: str
) -> None:
    context = lab.contexts[region]
    chart = str(chart_path("coder-v1"))
    release = "coder-satellite"
    satellite = [
        "--set",
        "coderd.satellite.enable=true",
        "--set",
        "coderd.satellite.primaryURL=http://127.0.0.1:17080",
        "--set",
        f"coderd.satellite.accessURL=http://coder-{region}.lab.coder-migrate.test",
        "--set",
        f"coderd.devurlsHost=*.coder-{region}.lab.coder-migrate.test",
        # coder/coder 1.21.0's `coderd` Service is a LoadBalancer; the lab has none.
        "--set",
        "coderd.serviceSpec.type=NodePort",
    ]
    install = ["upgrade", release, chart, "--install", "--wait", "--timeout", "90s"]
    selector = "coder.deployment=coderd"
    with lab.api(context) as api:
        apps = kube_client.AppsV1Api(api)
        try:
            helm.run(context, *install, "--namespace", namespace, "--create-namespace", *satellite)
            assert _release(helm, context, namespace, release)["info"]["status"] == "deployed"
            assert len(_wait_for_ready_count(api, namespace, selector, 1)) == 1
            key = _secret_value(api, namespace, "coder-replica-private-key", "privateKey")
            assert b"PRIVATE KEY" in base64.b64decode(key)
            # Satellite mode leaves out the database and the RBAC.
            assert not apps.list_namespaced_stateful_set(namespace).items
            assert not kube_client.RbacAuthorizationV1Api(api).list_namespaced_role(namespace).items

            scaled = [*satellite, "--set", "coderd.replicas=2"]
            diff = helm.run(
                context, "diff", "upgrade", release, chart, "--namespace", namespace, *scaled
            )
            assert "replicas: 2" in diff.stdout

            helm.run(context, *install, "--namespace", namespace, *scaled)
            assert len(_wait_for_ready_count(api, namespace, selector, 2)) == 2
            # The replica key is kept across upgrades.
            assert _secret_value(api, namespace, "coder-replica-private-key", "privateKey") == key

            helm.run(context, "rollback", release, "1", "--wait", "--namespace", namespace)
            assert _release(helm, context, namespace, release)["version"] == 3
            deployment = apps.read_namespaced_deployment("coderd", namespace)
            assert deployment.spec is not None and deployment.spec.replicas == 1
            assert len(_wait_for_ready_count(api, namespace, selector, 1)) == 1

            helm.run(context, "uninstall", release, "--wait", "--namespace", namespace)
            listed = helm.run(context, "list", "--namespace", namespace, "--output", "json")
            assert json.loads(listed.stdout) == []
            assert apps.list_namespaced_deployment(namespace).items == []
        finally:
            helm.run(
                context,
                "uninstall",
                release,
                "--namespace",
                namespace,
                "--ignore-not-found",
                check=False,
            )
            _delete_namespace(api, namespace)


def test_primary_charts_v1_workspace_provider_and_v2_proxy(
    lab: LabHandle, helm: Helm, namespace: str
) -> None:
    context = lab.contexts["primary"]
    install = ["upgrade", "--install", "--wait", "--timeout", "90s", "--create-namespace"]
    releases: dict[str, tuple[str, StandInChart]] = {
        "coder": (namespace, "coder-v1"),
        "coder-workspace-provider": (f"{namespace}-wp", "workspace-provider"),
        "coder-proxy": (f"{namespace}-v2", "coder-v2"),
    }
    with lab.api(context) as api:
        apps = kube_client.AppsV1Api(api)
        try:
            ns, chart = releases["coder"]
            # coder/coder 1.21.0's `coderd` Service is a LoadBalancer: none in the lab.
            helm.run(context, *install, "coder", str(chart_path(chart)), "--namespace", ns,
                     "--set", "coderd.serviceSpec.type=NodePort")
            timescale = apps.read_namespaced_stateful_set("timescale", ns)
            assert timescale.spec is not None and timescale.spec.replicas == 1
            _wait_for_ready_count(api, ns, "coder.deployment=coderd", 1)

            # The provider lives in its own namespace, as in a real deployment.
            ns, chart = releases["coder-workspace-provider"]
            helm.run(
                context,
                *install,
                "coder-workspace-provider",
                str(chart_path(chart)),
                "--namespace",
                ns,
                "--set",
                "envproxy.token=lab-envproxy-token",
                # What the real chart requires, and no nginx LoadBalancer in the lab.
                "--set",
                "envproxy.accessURL=https://provider.lab.internal",
                "--set",
                "envproxy.clusterAddress=https://kubernetes.default.svc",
                "--set",
                "cemanager.accessURL=http://127.0.0.1:17080",
                "--set",
                "ingress.useDefault=false",
            )
            service = kube_client.CoreV1Api(api).read_namespaced_service("envproxy", ns)
            assert service.spec is not None
            assert {port.port for port in service.spec.ports or []} == {8080, 2222}
            _wait_for_ready_count(api, ns, "coder.deployment=envproxy", 1)

            ns, chart = releases["coder-proxy"]
            helm.run(
                context,
                *install,
                "coder-proxy",
                str(chart_path(chart)),
                "--namespace",
                ns,
                "--set",
                "coder.workspaceProxy=true",
                "--set",
                "coder.service.type=ClusterIP",
            )
            proxy = apps.read_namespaced_deployment("coder", ns)
            assert proxy.spec is not None and proxy.spec.template.spec is not None
            assert proxy.spec.template.spec.containers[0].args == ["wsproxy", "server"]
            _wait_for_ready_count(api, ns, "app.kubernetes.io/name=coder", 1)
        finally:
            for release, (ns, _) in releases.items():
                helm.run(
                    context,
                    "uninstall",
                    release,
                    "--namespace",
                    ns,
                    "--ignore-not-found",
                    check=False,
                )
                _delete_namespace(api, ns)
