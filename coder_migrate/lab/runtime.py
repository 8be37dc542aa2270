"""``lab up / status / env / down``: start, inspect and stop the whole lab.

What runs is recorded in ``<state>/lab.json`` (PIDs with their start times, so a recycled
PID is never signalled); ``down`` stops exactly those processes and checks that every port
the lab used is free again. ``up`` reuses a healthy running lab and cleans up after itself
when it fails.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import importlib.util
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from coder_migrate.errors import ClusterNotReady, LabError, ToolchainMissing
from coder_migrate.lab import dns_servers, pod_processes, pods, world_releases
from coder_migrate.lab.build import LabBinaries, built_binaries
from coder_migrate.lab.clusters import KwokClusters, start_all, write_kubeconfig
from coder_migrate.lab.paths import CacheLayout, StateLayout
from coder_migrate.lab.primary_release import PrimaryRelease
from coder_migrate.lab.process import (
    ProcessRef,
    listening_ports_of,
    port_is_free,
    port_is_listening,
    require_free_ports,
    spawn,
    stop,
    wait_until,
)
from coder_migrate.lab.settings import (
    TSIG_ALGORITHM,
    TSIG_KEY_NAME,
    ZONE,
    LabSettings,
)
from coder_migrate.lab.world import lab_world

CODERD_START_TIMEOUT_SECONDS = 30.0
PODS_START_TIMEOUT_SECONDS = 15.0
#: The service that plays the region pods (coder_migrate/lab/pods.py). ``up`` starts it when
#: it is missing or dead (a lab started before it existed) instead of restarting the lab.
PODS_SERVICE = "pods"
PORTS_FREE_TIMEOUT_SECONDS = 15.0
MANIFEST_VERSION = 1


class LabManifest(BaseModel):
    """``<state>/lab.json``: what the running lab is made of."""

    version: int = MANIFEST_VERSION
    settings: LabSettings
    services: dict[str, ProcessRef] = Field(default_factory=dict)
    clusters: dict[str, list[ProcessRef]] = Field(default_factory=dict)
    ready: bool = False
    started_at: float = 0.0

    def all_processes(self) -> list[ProcessRef]:
        return [*self.services.values(), *(r for refs in self.clusters.values() for r in refs)]

    def core_processes(self) -> list[ProcessRef]:
        """Everything but the region pods supervisor, which ``up`` repairs on its own."""
        return [ref for ref in self.all_processes() if ref.name != PODS_SERVICE]


@dataclass(frozen=True)
class LabEndpoints:
    """Where everything of a running lab is; what the fixtures and ``lab env`` hand out."""

    state_dir: Path
    kubeconfig: Path
    contexts: dict[str, str]
    apiservers: dict[str, str]
    coder_url: str
    coder_mode: str
    coder_token_file: Path
    powerdns_api_url: str
    powerdns_server_id: str
    powerdns_dns: tuple[str, int]
    powerdns_api_key_file: Path
    bind_dns: tuple[str, int]
    tsig_key_name: str
    tsig_algorithm: str
    tsig_secret_file: Path
    zone: str
    regions: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "state_dir": str(self.state_dir),
            "kubeconfig": str(self.kubeconfig),
            "contexts": self.contexts,
            "apiservers": self.apiservers,
            "coder": {
                "url": self.coder_url,
                "mode": self.coder_mode,
                "token_file": str(self.coder_token_file),
            },
            "powerdns": {
                "api_url": self.powerdns_api_url,
                "server_id": self.powerdns_server_id,
                "dns": f"{self.powerdns_dns[0]}:{self.powerdns_dns[1]}",
                "api_key_file": str(self.powerdns_api_key_file),
            },
            "bind": {
                "dns": f"{self.bind_dns[0]}:{self.bind_dns[1]}",
                "tsig_key_name": self.tsig_key_name,
                "tsig_algorithm": self.tsig_algorithm,
                "tsig_secret_file": str(self.tsig_secret_file),
            },
            "zone": self.zone,
            "regions": list(self.regions),
        }


def endpoints_for(state: StateLayout, settings: LabSettings) -> LabEndpoints:
    clusters = settings.clusters
    return LabEndpoints(
        state_dir=state.root,
        kubeconfig=state.kubeconfig,
        contexts={c.name: c.context for c in clusters},
        apiservers={c.name: f"https://127.0.0.1:{c.apiserver_port}" for c in clusters},
        coder_url=f"http://127.0.0.1:{settings.coderd_port}",
        coder_mode=settings.coder_mode,
        coder_token_file=state.coder_token,
        powerdns_api_url=f"http://127.0.0.1:{settings.powerdns_api_port}",
        powerdns_server_id=dns_servers.POWERDNS_SERVER_ID,
        powerdns_dns=("127.0.0.1", settings.powerdns_dns_port),
        powerdns_api_key_file=state.pdns_api_key,
        bind_dns=("127.0.0.1", settings.bind_dns_port),
        tsig_key_name=TSIG_KEY_NAME,
        tsig_algorithm=TSIG_ALGORITHM,
        tsig_secret_file=state.tsig_secret,
        zone=ZONE,
        regions=settings.regions,
    )


class Lab:
    """One lab instance, identified by its state directory."""

    def __init__(self, state: StateLayout, cache: CacheLayout) -> None:
        self.state = state
        self.cache = cache
        self.binaries = LabBinaries.from_cache(cache)
        self.clusters = KwokClusters(self.binaries, state.kwok_workdir, state.logs)

    # -- manifest ------------------------------------------------------------------------------

    def manifest(self) -> LabManifest | None:
        if not self.state.manifest.is_file():
            return None
        try:
            return LabManifest.model_validate_json(self.state.manifest.read_text())
        except ValueError:
            return None

    def _save(self, manifest: LabManifest) -> None:
        self.state.root.mkdir(parents=True, exist_ok=True)
        temporary = self.state.manifest.with_suffix(".tmp")
        temporary.write_text(manifest.model_dump_json(indent=2) + "\n")
        temporary.rename(self.state.manifest)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One ``up``/``down`` at a time per state directory (e.g. two test sessions)."""
        self.state.root.mkdir(parents=True, exist_ok=True)
        with self.state.lock.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def is_running(self, manifest: LabManifest) -> bool:
        """Every recorded process alive and every fixed port answering."""
        if not manifest.ready or not manifest.core_processes():
            return False
        if not all(ref.alive() for ref in manifest.core_processes()):
            return False
        tcp_ports = [
            manifest.settings.powerdns_api_port,
            manifest.settings.coderd_port,
            *(c.apiserver_port for c in manifest.settings.clusters),
        ]
        return all(port_is_listening(port) for port in tcp_ports)

    # -- up ------------------------------------------------------------------------------------

    def up(self, settings: LabSettings) -> tuple[LabEndpoints, bool]:
        """Start the lab, or reuse the running one; return its endpoints and whether reused."""
        with self._locked():
            current = self.manifest()
            if current is not None and self.is_running(current):
                if current.settings != settings:
                    raise LabError(
                        f"a lab with other settings ({_describe(current.settings)}) runs from "
                        f"{self.state.root}; run `coder-migrate lab down` first"
                    )
                self._ensure_pods(current)
                return endpoints_for(self.state, settings), True
            if current is not None:
                # Leftovers of a lab that stopped or crashed: stop them, keep their data.
                self._stop_processes(current, keep=True)
            missing = self.binaries.missing()
            if missing:
                raise ToolchainMissing(
                    f"{missing[0]} is missing; run `coder-migrate lab build` first"
                )
            require_free_ports(settings.fixed_ports())
            fresh = current is None
            manifest = LabManifest(settings=settings, started_at=time.time())
            try:
                self._start(settings, manifest)
            except BaseException:
                # Stop what this attempt started; a fresh lab also loses its half-made data
                # (the logs stay, the error message points at them).
                self._stop_processes(manifest, keep=not fresh)
                if fresh:
                    self._remove_data(keep_logs=True)
                else:
                    self._save(manifest.model_copy(update={"ready": False}))
                raise
            manifest.ready = True
            self._save(manifest)
            return endpoints_for(self.state, settings), False

    def _start(self, settings: LabSettings, manifest: LabManifest) -> None:
        state = self.state
        for directory in (state.root, state.logs):
            directory.mkdir(parents=True, exist_ok=True)
        pdns_api_key = _ensure_secret(state.pdns_api_key, lambda: secrets.token_hex(24))
        tsig_secret = _ensure_secret(
            state.tsig_secret, lambda: base64.b64encode(secrets.token_bytes(32)).decode()
        )
        self._save(manifest)
        manifest.services["pdns"] = dns_servers.start_powerdns(
            state.service_dir("pdns"),
            state.logs / "pdns.log",
            settings.powerdns_dns_port,
            settings.powerdns_api_port,
            pdns_api_key,
        )
        self._save(manifest)
        manifest.services["bind"] = dns_servers.start_bind(
            state.service_dir("bind"), state.logs / "named.log", settings.bind_dns_port, tsig_secret
        )
        self._save(manifest)
        # The emulator seeds itself and writes its admin token while the clusters start.
        manifest.services["coderd"] = self._spawn_coderd(settings)
        self._save(manifest)

        try:
            start_all(self.clusters, settings.clusters)
        finally:
            for cluster in settings.clusters:
                manifest.clusters[cluster.name] = self.clusters.process_refs(cluster.name)
            self._save(manifest)
        write_kubeconfig(
            state.kubeconfig,
            {c.context: self.clusters.kubeconfig_entry(c) for c in settings.clusters},
            current=settings.clusters[0].context,
        )
        with ThreadPoolExecutor(max_workers=len(settings.clusters)) as pool:
            waits = [
                pool.submit(self.clusters.ensure_node_and_wait, c, state.kubeconfig)
                for c in settings.clusters
            ]
            for future in waits:
                future.result()
        self._wait_coderd(settings, manifest.services["coderd"])
        self._ensure_pods(manifest)
        if settings.world is not None:
            # After the pods service: the emulator follows the primary release from here on.
            token = self.state.coder_token.read_text(encoding="utf-8").strip()
            world_releases.install_world(settings, str(state.kubeconfig), token)

    def _ensure_pods(self, manifest: LabManifest) -> None:
        """Start the region pods supervisor unless it runs (a lab started before it existed
        has none in its manifest); record it in the manifest."""
        current = manifest.services.get(PODS_SERVICE)
        if current is not None and current.alive():
            return
        settings = manifest.settings
        regions = {c.name: c.context for c in settings.clusters if c.name != "primary"}
        world = lab_world().primary
        # A v1 primary follows its release (1.20 and 1.21 behave differently); a v2 one keeps
        # the version it was started with.
        # Both take the provisioner key the primary's pod reads (v2's external provisioners).
        primary = PrimaryRelease(
            context=settings.clusters[0].context, namespace=world.namespace,
            release=world.release, coderd_url=f"http://127.0.0.1:{settings.coderd_port}",
            token_file=self.state.coder_token,
            follow_version=settings.coder_mode.startswith("v1"),
        )
        # Proxies a killed supervisor left behind hold their ports: stop them first.
        pod_processes.stop_orphans(self.state)
        self.state.pods_state.unlink(missing_ok=True)
        log_file = self.state.logs / "pods.log"
        command = pods.supervisor_command(self.state, regions, primary,
                                          [c.context for c in settings.clusters])
        ref, _ = spawn(PODS_SERVICE, command, log_file)
        manifest.services[PODS_SERVICE] = ref
        self._save(manifest)

        def first_tick_written() -> bool:
            return ref.alive() and self.state.pods_state.is_file()

        if not wait_until(first_tick_written, PODS_START_TIMEOUT_SECONDS, interval=0.1):
            raise LabError(
                f"the region pods supervisor did not start within "
                f"{PODS_START_TIMEOUT_SECONDS:.0f} s; see {log_file}, then run "
                "`coder-migrate lab up` again"
            )

    def _spawn_coderd(self, settings: LabSettings) -> ProcessRef:
        if importlib.util.find_spec("coder_migrate.lab.coderd.__main__") is None:
            raise ToolchainMissing(
                "the Coder API emulator (coder_migrate.lab.coderd) is not installed; "
                "reinstall coder-migrate (`scripts/bootstrap`) and retry `coder-migrate lab up`"
            )
        self.state.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.state.coder_token.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "coder_migrate.lab.coderd",
            "serve",
            "--listen",
            f"127.0.0.1:{settings.coderd_port}",
            "--state-dir",
            str(self.state.service_dir("coderd")),
            "--mode",
            settings.coder_mode,
            "--token-file",
            str(self.state.coder_token),
        ]
        if settings.world is not None:
            seed = self.state.service_dir("coderd") / "world-seed.json"
            seed.parent.mkdir(parents=True, exist_ok=True)
            seed.write_text(json.dumps(world_releases.emulator_seed(settings), indent=2) + "\n")
            command += ["--config", str(seed)]
        ref, _ = spawn("coderd", command, self.state.logs / "coderd.log")
        return ref

    def _wait_coderd(self, settings: LabSettings, ref: ProcessRef) -> None:
        def ready() -> bool:
            return (
                ref.alive()
                and self.state.coder_token.is_file()
                and port_is_listening(settings.coderd_port)
            )

        if not wait_until(ready, CODERD_START_TIMEOUT_SECONDS):
            raise ClusterNotReady(
                f"the Coder API emulator did not start on 127.0.0.1:{settings.coderd_port} "
                f"within {CODERD_START_TIMEOUT_SECONDS:.0f} s; see {self.state.logs / 'coderd.log'}"
                ", then `coder-migrate lab down` and retry"
            )

    # -- down ----------------------------------------------------------------------------------

    def down(self, keep: bool = False) -> list[str]:
        """Stop every process the lab started; unless KEEP, remove its data. Return names."""
        with self._locked():
            manifest = self.manifest()
            stopped: list[str] = []
            if manifest is not None:
                processes = [*manifest.all_processes(),
                             *pod_processes.recorded_children(self.state)]
                used = listening_ports_of({r.pid for r in processes if r.alive()})
                stopped = self._stop_processes(manifest, keep=keep)
                self._check_ports_free(used)
            if not keep:
                self._remove_data()
            elif manifest is not None:
                self._save(manifest.model_copy(update={"ready": False}))
            return stopped

    def _stop_processes(self, manifest: LabManifest, keep: bool) -> list[str]:
        children = pod_processes.recorded_children(self.state)
        stopped = [ref.name for ref in [*manifest.all_processes(), *children] if ref.alive()]
        # The pods supervisor first: it stops its proxies; any it could not are stopped here.
        supervisor = manifest.services.get(PODS_SERVICE)
        if supervisor is not None:
            stop(supervisor)
        for ref in children:
            stop(ref)
        for ref in manifest.services.values():
            stop(ref)
        cluster_names = set(manifest.clusters) | {c.name for c in manifest.settings.clusters}

        def stop_cluster(name: str) -> None:
            refs = [*manifest.clusters.get(name, []), *self.clusters.process_refs(name)]
            if keep:
                self.clusters.stop(name, refs)
            else:
                self.clusters.delete(name, refs)

        with ThreadPoolExecutor(max_workers=max(1, len(cluster_names))) as pool:
            for future in [pool.submit(stop_cluster, n) for n in sorted(cluster_names)]:
                future.result()
        survivors = [ref for ref in [*manifest.all_processes(), *children] if ref.alive()]
        if survivors:
            names = ", ".join(f"{r.name} (pid {r.pid})" for r in survivors)
            raise LabError(f"these lab processes did not stop: {names}; stop them by PID")
        return stopped

    def _check_ports_free(self, ports: set[int]) -> None:
        """Every port the lab's processes listened on is free again."""

        def all_free() -> bool:
            return all(port_is_free(port) for port in ports)

        if not wait_until(all_free, PORTS_FREE_TIMEOUT_SECONDS):
            busy = sorted(port for port in ports if not port_is_free(port))
            raise LabError(
                f"ports still in use after `lab down`: {', '.join(map(str, busy))}; "
                "see `ss -ltnp` for who holds them"
            )

    def _remove_data(self, keep_logs: bool = False) -> None:
        state = self.state
        directories = [
            state.kwok_workdir,
            state.service_dir("pdns"),
            state.service_dir("bind"),
            state.service_dir("coderd"),
            state.secrets,
        ]
        if not keep_logs:
            directories.append(state.logs)
        for path in directories:
            shutil.rmtree(path, ignore_errors=True)
        for path in (state.kubeconfig, state.manifest, state.pods_state):
            path.unlink(missing_ok=True)

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        manifest = self.manifest()
        binaries = built_binaries(self.cache)
        if manifest is None:
            return {
                "state_dir": str(self.state.root), "running": False, "processes": [],
                "binaries": binaries,
            }
        processes = []
        # The region pods' proxies after the lab's own processes (docs/lab.md "Region pods").
        for ref in [*manifest.all_processes(), *pod_processes.recorded_children(self.state)]:
            alive = ref.alive()
            ports = sorted(listening_ports_of({ref.pid})) if alive else []
            processes.append({"name": ref.name, "pid": ref.pid, "alive": alive, "ports": ports})
        return {
            "state_dir": str(self.state.root),
            "running": self.is_running(manifest),
            "settings": manifest.settings.model_dump(),
            "endpoints": endpoints_for(self.state, manifest.settings).as_dict(),
            "processes": processes,
            "binaries": binaries,
        }

    def endpoints(self) -> LabEndpoints | None:
        manifest = self.manifest()
        return None if manifest is None else endpoints_for(self.state, manifest.settings)

    def pids(self) -> set[int]:
        manifest = self.manifest()
        if manifest is None:
            return set()
        return {ref.pid for ref in manifest.all_processes() if ref.alive()}


def _describe(settings: LabSettings) -> str:
    world = f"; world {settings.world}" if settings.world else ""
    return (
        f"regions {', '.join(settings.regions)}; port offset {settings.port_offset}; "
        f"coder {settings.coder_mode}{world}"
    )


def _ensure_secret(path: Path, generate: Callable[[], str]) -> str:
    """Read the lab's secret at PATH, creating it (0600, in a 0700 directory) if missing."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    value = generate()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
    path.chmod(0o600)
    return value
