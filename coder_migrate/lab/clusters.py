"""The lab's Kubernetes clusters: one real control plane each, started by ``kwokctl``'s
binary runtime from the cached binaries, with one kwok-simulated node.

kwokctl keeps each cluster under ``<state>/kwok/clusters/<name>/`` (pids/, logs/, pki/,
etcd data). Every binary path is a local file, so kwokctl never downloads anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from coder_migrate.errors import ClusterNotReady, LabError, ToolchainMissing, redact
from coder_migrate.lab.build import LabBinaries
from coder_migrate.lab.process import ProcessRef, ref_for, stop, wait_until
from coder_migrate.lab.settings import LAB_ZONES, NODE_NAME, ClusterSettings

READY_TIMEOUT_SECONDS = 120.0
KWOKCTL_TIMEOUT_SECONDS = 180.0


class KwokClusters:
    """Create, start, stop and delete the lab's clusters through kwokctl."""

    def __init__(self, binaries: LabBinaries, workdir: Path, logs: Path) -> None:
        self.binaries = binaries
        self.workdir = workdir
        self.logs = logs

    # -- kwokctl ---------------------------------------------------------------------------

    def workdir_of(self, name: str) -> Path:
        # One kwokctl workdir per cluster: each gets its own kwok.yaml with fixed ports, so
        # clusters can be created in parallel without racing for the same free port.
        return self.workdir / name

    def environment(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env["KWOK_WORKDIR"] = str(self.workdir_of(name))
        # kwokctl runs the first kubectl on PATH: the lab's own.
        env["PATH"] = f"{self.binaries.kubectl.parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def write_config(self, cluster: ClusterSettings) -> None:
        """kwokctl reads ``<workdir>/kwok.yaml``: binaries, ports, loopback-only binding."""
        options = {
            "runtime": "binary",
            "bindAddress": "127.0.0.1",
            "kubeApiserverPort": cluster.apiserver_port,
            "etcdPort": cluster.etcd_port,
            "etcdPeerPort": cluster.etcd_peer_port,
            "kwokControllerPort": cluster.kwok_controller_port,
            "kubeControllerManagerPort": cluster.controller_manager_port,
            "kubeSchedulerPort": cluster.scheduler_port,
            "kubeApiserverBinary": str(self.binaries.kube_apiserver),
            "kubeControllerManagerBinary": str(self.binaries.kube_controller_manager),
            "kubeSchedulerBinary": str(self.binaries.kube_scheduler),
            "kwokControllerBinary": str(self.binaries.kwok),
            "etcdBinary": str(self.binaries.etcd),
            "kubectlBinary": str(self.binaries.kubectl),
            "cacheDir": str(self.workdir_of(cluster.name) / "cache"),
            "quietPull": True,
        }
        document = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": options,
        }
        workdir = self.workdir_of(cluster.name)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "kwok.yaml").write_text(yaml.safe_dump(document, sort_keys=False))

    def kwokctl(self, name: str, *args: str, timeout: float = KWOKCTL_TIMEOUT_SECONDS) -> None:
        if not self.binaries.kwokctl.is_file():
            raise ToolchainMissing(
                f"{self.binaries.kwokctl} is missing; run `coder-migrate lab build` first"
            )
        log = self.logs / f"kwokctl-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as output:
            output.write(f"$ kwokctl --name {name} {' '.join(args)}\n")
            output.flush()
            try:
                result = subprocess.run(
                    [str(self.binaries.kwokctl), "--name", name, *args],
                    env=self.environment(name),
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ClusterNotReady(
                    f"kwokctl {args[0]} cluster {name} did not finish within {timeout:.0f} s; "
                    f"see {log}, then `coder-migrate lab down` and retry"
                ) from None
        if result.returncode != 0:
            raise ClusterNotReady(
                f"kwokctl {args[0]} cluster {name} failed (exit {result.returncode}): "
                f"{redact(_last_line(log))}; see {log}, then `coder-migrate lab down` and retry"
            )

    def cluster_dir(self, name: str) -> Path:
        return self.workdir_of(name) / "clusters" / name

    def exists(self, name: str) -> bool:
        return (self.cluster_dir(name) / "kwok.yaml").is_file()

    def create_or_start(self, cluster: ClusterSettings) -> None:
        self.write_config(cluster)
        if self.exists(cluster.name):
            self.kwokctl(cluster.name, "start", "cluster")
            return
        self.kwokctl(
            cluster.name,
            "create",
            "cluster",
            "--runtime",
            "binary",
            "--kubeconfig",
            "",
            "--quiet-pull",
        )

    def stop(self, name: str, refs: list[ProcessRef]) -> None:
        """Stop the cluster's processes (data kept), by kwokctl and then by PID."""
        if self.exists(name):
            # The PIDs below are stopped either way.
            with contextlib.suppress(LabError):
                self.kwokctl(name, "stop", "cluster", timeout=60)
        for ref in refs:
            stop(ref)

    def delete(self, name: str, refs: list[ProcessRef]) -> None:
        self.stop(name, refs)
        # The components' logs outlive the cluster (a failed `lab up` points at them).
        component_logs = self.cluster_dir(name) / "logs"
        if component_logs.is_dir():
            shutil.copytree(component_logs, self.logs / name, dirs_exist_ok=True)
        shutil.rmtree(self.workdir_of(name), ignore_errors=True)

    def process_refs(self, name: str) -> list[ProcessRef]:
        """The PIDs kwokctl recorded for this cluster's components."""
        refs: list[ProcessRef] = []
        pids = self.cluster_dir(name) / "pids"
        for pid_file in sorted(pids.glob("*.pid")) if pids.is_dir() else []:
            try:
                pid = int(pid_file.read_text().strip())
            except ValueError:
                continue
            ref = ref_for(f"{name}/{pid_file.stem}", pid)
            if ref is not None:
                refs.append(ref)
        return refs

    # -- kubeconfig and readiness -------------------------------------------------------------

    def kubeconfig_entry(self, cluster: ClusterSettings) -> dict[str, Any]:
        path = self.cluster_dir(cluster.name) / "kubeconfig.yaml"
        loaded: dict[str, Any] = yaml.safe_load(path.read_text())
        return {
            "cluster": dict(loaded["clusters"][0]["cluster"]),
            "user": dict(loaded["users"][0]["user"]),
        }

    def ensure_node_and_wait(self, cluster: ClusterSettings, kubeconfig: Path) -> None:
        """Create the kwok node and wait until the cluster can run a Deployment."""
        api = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
            str(kubeconfig), context=cluster.context
        )
        try:
            core = kube_client.CoreV1Api(api)
            log_hint = self.logs

            def api_up() -> bool:
                core.list_namespace(limit=1, _request_timeout=2)
                return True

            if not wait_until(api_up, READY_TIMEOUT_SECONDS, 0.5):
                raise ClusterNotReady(
                    f"cluster {cluster.name}: the API server on 127.0.0.1:"
                    f"{cluster.apiserver_port} did not answer within "
                    f"{READY_TIMEOUT_SECONDS:.0f} s; see {log_hint}, then "
                    "`coder-migrate lab down` and retry"
                )
            existing = {node.metadata.name: dict(node.metadata.labels or {})
                        for node in core.list_node().items if node.metadata}
            for name, zone in zone_nodes():
                node = _kwok_node(name, zone)
                if name not in existing:
                    core.create_node(node)  # type: ignore[arg-type]  # a plain dict works
                elif existing[name].get(ZONE_LABEL) != zone:  # a lab kept from before zones
                    core.patch_node(name, {"metadata": {"labels": {ZONE_LABEL: zone}}})

            def node_ready_and_default_sa() -> bool:
                ready = True
                for name, _ in zone_nodes():
                    node = core.read_node(name, _request_timeout=2)
                    conditions = (node.status.conditions if node.status else None) or []
                    ready = ready and any(
                        c.type == "Ready" and c.status == "True" for c in conditions)
                core.read_namespaced_service_account("default", "default", _request_timeout=2)
                return ready

            if not wait_until(node_ready_and_default_sa, READY_TIMEOUT_SECONDS, 0.5):
                raise ClusterNotReady(
                    f"cluster {cluster.name}: the kwok nodes did not become Ready within "
                    f"{READY_TIMEOUT_SECONDS:.0f} s; see {log_hint}, then "
                    "`coder-migrate lab down` and retry"
                )
        finally:
            api.close()


ZONE_LABEL = "topology.kubernetes.io/zone"


def zone_nodes() -> list[tuple[str, str]]:
    """(node name, zone) of each cluster's kwok nodes: kwok-node-0 in the first zone, ..."""
    return [(NODE_NAME if index == 0 else f"kwok-node-{index}", zone)
            for index, zone in enumerate(LAB_ZONES)]


def _kwok_node(name: str = NODE_NAME, zone: str = LAB_ZONES[0]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                ZONE_LABEL: zone,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "type": "kwok",
            },
        },
        "spec": {},
    }


def write_kubeconfig(path: Path, entries: dict[str, dict[str, Any]], current: str) -> None:
    """One kubeconfig with a context per cluster, named ``lab-<cluster>``."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": e["cluster"]} for name, e in entries.items()],
        "users": [{"name": name, "user": e["user"]} for name, e in entries.items()],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name}} for name in entries
        ],
        "current-context": current,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(document, sort_keys=False))
    temporary.chmod(0o600)
    temporary.rename(path)


def start_all(clusters: KwokClusters, settings: list[ClusterSettings], parallel: int = 4) -> None:
    """Create (or start kept) clusters in parallel; the first failure is raised."""
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for future in [pool.submit(clusters.create_or_start, c) for c in settings]:
            future.result()


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
