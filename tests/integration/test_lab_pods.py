"""The lab plays each region's satellite / workspace-proxy pod with the bundled proxy.

Real parts end to end: the stand-in charts installed by helm into a region cluster of the
lab, the lab's pods supervisor reading the Deployments and Secrets, the bundled proxy on a
loopback access URL, and the Coder emulator as the primary. Each test owns its namespace
(unique name) and removes it. Values come from the engine's templates
(``coder_migrate.engine.values.release_values``) for a lab region whose access URL is
moved to a loopback address of its own (not 127.0.1.1-3 of the lab inventory).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client as kube_client

from coder_migrate.engine.values import TokenSecret, deep_merge, release_values
from coder_migrate.inventory import load_topology
from coder_migrate.lab.paths import CacheLayout, StateLayout
from coder_migrate.lab.process import ProcessRef, stop
from coder_migrate.lab.runtime import Lab
from coder_migrate.lab.settings import LabSettings
from coder_migrate.lab.tools import helm_binary
from coder_migrate.providers.coder import CoderV1Client, satellite_key
from coder_migrate.providers.coder.health import health_url
from coder_migrate.providers.coder.probes import probe_url
from tests.fixtures.coderd import CoderEmulator
from tests.fixtures.lab import Helm, LabHandle, temporary_namespace
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

CLUSTER = "eu-west"
CONTEXT = "lab-eu-west"
CHARTS = Path(__file__).resolve().parents[2] / "coder_migrate" / "lab" / "charts"
LAB_INVENTORY = Path(__file__).resolve().parents[2] / "inventories" / "lab"


def loopback_url(host: str) -> str:
    """An access URL on HOST (127.0.2.x: outside the lab inventory's 127.0.1.1-3) and a free
    port."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return f"http://{host}:{sock.getsockname()[1]}"


def pods_state(lab: LabHandle) -> dict[str, Any]:
    return dict(json.loads((lab.endpoints.state_dir / "pods.json").read_text()))


def pod_record(lab: LabHandle, namespace: str) -> dict[str, Any] | None:
    for pod in pods_state(lab)["pods"]:
        if pod["cluster"] == CLUSTER and pod["namespace"] == namespace and not pod["stopping"]:
            return dict(pod)
    return None


def any_pod_record(lab: LabHandle, namespace: str) -> bool:
    """A record for the namespace, running or still stopping."""
    return any(
        pod["cluster"] == CLUSTER and pod["namespace"] == namespace
        for pod in pods_state(lab)["pods"]
    )


def port_closed(url: str) -> bool:
    parts = httpx.URL(url)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((parts.host, parts.port or 80)) != 0


def region_values(
    lab: LabHandle, generation: str, primary_url: str, access_url: str
) -> dict[str, Any]:
    topology = load_topology(LAB_INVENTORY)
    topology = topology.model_copy(
        update={
            "generation": generation,
            "primary": topology.primary.model_copy(update={"access_url": primary_url}),
        }
    )
    region = topology.region(CLUSTER).model_copy(
        update={"access_url": access_url, "wildcard_host": None, "tls": None}
    )
    if generation == "v2":
        # The lab has no load balancer: a LoadBalancer Service would keep `helm --wait`
        # waiting (inventories/lab gives v1 releases a NodePort `coderd` Service).
        region = region.model_copy(update={"values": {"coder": {"service": {"type": "ClusterIP"}}}})
    return release_values(topology, region)


@pytest.fixture
def namespace(lab: LabHandle, helm: Helm) -> Iterator[str]:
    with temporary_namespace(lab, helm, CONTEXT, "pods-test") as name:
        yield name


def install(helm: Helm, tmp_path: Path, namespace: str, chart: str, values: dict[str, Any]) -> None:
    values_file = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm.run(
        CONTEXT,
        "upgrade",
        "--install",
        "region",
        str(CHARTS / chart),
        "-n",
        namespace,
        "-f",
        str(values_file),
        "--wait",
        "--timeout",
        "60s",
    )


def test_v1_satellite_pod_serves_the_key_from_its_secret(
    lab: LabHandle, helm: Helm, namespace: str, tmp_path: Path
) -> None:
    """A Deployment the coder/coder 1.21.0 stand-in renders from the toolkit's values runs
    `coderd replica` with the real env; the lab plays it: the key fetch, the registration with
    the primary and the health gate all pass."""
    access_url = loopback_url("127.0.2.11")
    values = region_values(lab, "v1", lab.endpoints.coder_url, access_url)
    install(helm, tmp_path, namespace, "coder-v1", values)

    with lab.api(CONTEXT) as api:
        deployment = kube_client.AppsV1Api(api).read_namespaced_deployment("coderd", namespace)
        secret = kube_client.CoreV1Api(api).read_namespaced_secret(
            "coder-replica-private-key", namespace
        )
    main = deployment.spec.template.spec.containers[0]
    assert (main.command, main.args) == (["/entrypoint.sh"], ["coderd", "replica"])
    names = {e.name for e in main.env}
    assert {"CODER_PRIMARY_ACCESS_URL", "CODER_SATELLITE_ACCESS_URL",
            "CODER_SATELLITE_PRIVATE_KEY", "DEVURL_HOST", "DB_SSL_MODE"} <= names
    assert not {"CODER_SATELLITE_ENABLE", "CODER_PRIMARY_URL", "CODER_REPLICA_PRIVATE_KEY"} & names
    private_pem = base64.b64decode(secret.data["privateKey"]).decode()
    expected = satellite_key.public_key_pem(private_pem)  # helm's genPrivateKey "ecdsa"

    def key_served() -> dict[str, Any] | None:
        response = httpx.get(f"{access_url}/api/private/satellites/key", timeout=2)
        return dict(response.json()) if response.status_code == 200 else None

    served = wait_for(key_served, f"the satellite key on {access_url}")
    assert served == {"key": expected, "fingerprint": satellite_key.fingerprint(expected)}
    first = pod_record(lab, namespace)
    assert first is not None
    assert (first["mode"], first["listen"], first["release"]) == (
        "satellite",
        access_url.removeprefix("http://"),
        "region",
    )
    # Everything else goes to the primary (the lab's emulator) through the satellite.
    assert httpx.get(f"{access_url}/api/private/version", timeout=5).status_code != 502
    # The health gate (the path coder/coder 1.21.0 probes) and the registration.
    assert asyncio.run(probe_url(health_url(access_url, "v1"))) == (True, "HTTP 200")
    name = f"lab-pod-{uuid.uuid4().hex[:8]}"

    async def register() -> str:
        async with CoderV1Client(lab.endpoints.coder_url, lab.coder_token) as primary:
            fetched = await primary.fetch_satellite_key(access_url)
            created = await primary.create_satellite(name, fetched.key)
            await primary.delete_satellite(created.id)
            return created.fingerprint

    assert asyncio.run(register()) == served["fingerprint"]

    # An upgrade with a changed value: a new process with the new env, the same key.
    upgraded = deep_merge(values, {"coderd": {"devurlsHost": "*.sat-upgraded.lab.internal"}})
    install(helm, tmp_path, namespace, "coder-v1", upgraded)

    def restarted() -> dict[str, Any] | None:
        pod = pod_record(lab, namespace)
        return pod if pod is not None and pod["pid"] != first["pid"] else None

    second = wait_for(restarted, "a restart after the upgrade")
    assert second["env_hash"] != first["env_hash"]
    assert not ProcessRef(name="old", pid=first["pid"], start_ticks=first["start_ticks"]).alive()
    assert wait_for(key_served, "the key after the restart") == served

    # Uninstall: the process stops and the port closes.
    helm.run(CONTEXT, "uninstall", "region", "-n", namespace, "--wait")
    wait_for(lambda: port_closed(access_url), f"{access_url} closed")
    process = ProcessRef(name="p", pid=second["pid"], start_ticks=second["start_ticks"])
    wait_for(lambda: not process.alive(), "the satellite process stopped")
    wait_for(lambda: not any_pod_record(lab, namespace), "the pod gone from pods.json")
    assert private_pem not in (lab.endpoints.state_dir / "pods.json").read_text()


def test_v2_workspace_proxy_pod_registers_and_goes_away(
    lab: LabHandle, helm: Helm, namespace: str, tmp_path: Path, coderd_v2: CoderEmulator
) -> None:
    name = f"lab-pod-{uuid.uuid4().hex[:8]}"
    created = coderd_v2.admin("POST", "/api/v2/workspaceproxies", {"name": name})
    assert created.status_code == 201, created.text
    token = created.json()["proxy_token"]
    secret = TokenSecret()
    with lab.api(CONTEXT) as api:
        kube_client.CoreV1Api(api).create_namespaced_secret(
            namespace,
            kube_client.V1Secret(
                metadata=kube_client.V1ObjectMeta(name=secret.name),
                string_data={secret.key: token},
            ),
        )
    access_url = loopback_url("127.0.2.12")
    assert coderd_v2.health_check()[name]["status"] == "unregistered"
    install(
        helm, tmp_path, namespace, "coder-v2", region_values(lab, "v2", coderd_v2.url, access_url)
    )

    def status() -> str:
        return str(coderd_v2.health_check()[name]["status"])

    wait_for(lambda: status() == "ok", f"proxy {name} ok on the primary")
    listed = coderd_v2.admin("GET", f"/api/v2/workspaceproxies/{name}").json()
    assert listed["path_app_url"] == access_url
    first = pod_record(lab, namespace)
    assert first is not None and first["mode"] == "workspace-proxy"

    with lab.api(CONTEXT) as api:
        service = kube_client.CoreV1Api(api).read_namespaced_service("coder", namespace)
    assert service.spec.type == "ClusterIP"  # coder.service.type honoured

    # A new token in the Secret (the engine's regenerate_token, every required field sent).
    regenerated = coderd_v2.admin(
        "PATCH", f"/api/v2/workspaceproxies/{name}",
        {"id": listed["id"], "name": name, "display_name": "Lab pod",
         "icon": "/emojis/1f1ee-1f1ea.png", "regenerate_token": True},
    )
    assert regenerated.status_code == 200, regenerated.text
    with lab.api(CONTEXT) as api:
        kube_client.CoreV1Api(api).patch_namespaced_secret(
            secret.name, namespace, {"stringData": {secret.key: regenerated.json()["proxy_token"]}}
        )

    def restarted() -> dict[str, Any] | None:
        pod = pod_record(lab, namespace)
        return pod if pod is not None and pod["pid"] != first["pid"] else None

    second = wait_for(restarted, "a restart after the token changed")
    wait_for(lambda: status() == "ok", "ok again with the new token")
    state_text = (lab.endpoints.state_dir / "pods.json").read_text()
    assert token not in state_text and regenerated.json()["proxy_token"] not in state_text

    helm.run(CONTEXT, "uninstall", "region", "-n", namespace, "--wait")
    # Stopping is SIGTERM first: the proxy deregisters, then exits (SIGKILL after the grace).
    process = ProcessRef(name="p", pid=second["pid"], start_ticks=second["start_ticks"])
    wait_for(lambda: not process.alive(), "the proxy process stopped")
    wait_for(lambda: not any_pod_record(lab, namespace), "the pod gone from pods.json")
    assert port_closed(access_url)
    # It deregistered on the way out, as a stopped pod does.
    wait_for(lambda: status() in ("unregistered", "unreachable"), "not ok after uninstall")


def test_lab_status_lists_the_pods_supervisor(lab: LabHandle) -> None:
    processes = {p["name"]: p for p in lab.lab.status()["processes"]}
    assert processes["pods"]["alive"] is True
    assert pods_state(lab)["supervisor_pid"] == processes["pods"]["pid"]


def test_private_lab_starts_missing_pods_service_and_down_leaves_no_proxy(
    tmp_path: Path,
) -> None:
    """Item of the lab lifecycle on a private lab (own state, ports moved): a running lab
    without the pods service (started before it existed) gets it from ``up``; ``down``
    stops the region pods' proxies too."""
    state = StateLayout(tmp_path / "lab")
    lab = Lab(state, CacheLayout.default())
    # Offset 2500: clear of the shared lab and of test_lab_lifecycle's 1000-1200.
    settings = LabSettings.create(regions=1, port_offset=2500)
    access_url = loopback_url("127.0.2.13")
    child: ProcessRef | None = None
    try:
        lab.up(settings)
        manifest = lab.manifest()
        assert manifest is not None
        stop(manifest.services["pods"])
        manifest.services.pop("pods")
        (state.root / "lab.json").write_text(manifest.model_dump_json())

        _, reused = lab.up(settings)
        assert reused
        restored = lab.manifest()
        assert restored is not None and restored.services["pods"].alive()

        helm = Helm(binary=helm_binary(), kubeconfig=state.kubeconfig)
        helm.run(
            "lab-us-east",
            "install",
            "lifecycle",
            str(CHARTS / "coder-v1"),
            "-n",
            "pods-lifecycle",
            "--create-namespace",
            "--set",
            "coderd.satellite.enable=true",
            "--set",
            f"coderd.satellite.primaryURL=http://127.0.0.1:{settings.coderd_port}",
            "--set",
            f"coderd.satellite.accessURL={access_url}",
            "--set",
            "coderd.serviceSpec.type=NodePort",
            "--wait",
        )
        wait_for(
            lambda: httpx.get(health_url(access_url, "v1"), timeout=2).status_code == 200,
            f"the private lab's satellite on {access_url}",
        )
        pod = json.loads(state.pods_state.read_text())["pods"][0]
        child = ProcessRef(name="pod", pid=pod["pid"], start_ticks=pod["start_ticks"])
        assert child.alive()
    finally:
        lab.down()
    assert child is not None and not child.alive()
    assert port_closed(access_url)
    assert not state.pods_state.exists()
