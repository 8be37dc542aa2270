"""The lab's region pods: each satellite / envproxy / workspace-proxy Deployment played by the
bundled proxy.

kwok simulates pods but runs nothing, so a region's ``coderd`` (coder/coder 1.21.0 running
``coderd replica``) or ``coder`` (coder-v2/coder running ``wsproxy server``) would never
answer. This supervisor (a kubelet for just these pods) makes them real: every tick it lists
the Deployments of each region cluster, picks the containers whose args the real images run
as a satellite, an envproxy (coder/workspace-provider) or a workspace proxy, resolves their
env as the kubelet would (``coder_migrate.lab.pod_spec``) and runs one
``python -m coder_migrate.proxy`` per Deployment with replicas > 0, with exactly that env and
the mode the args chose: forked by the lab's fork server (``coder_migrate/lab/forkserver.py``,
the proxy imported once), so a pod costs a fork, not an interpreter start; each pod is still a
process of its own, the supervisor's child. Besides the tick (every 0.75 s) it watches each
cluster's Deployments: a new or changed one is acted on at once, not at the next tick.

One lab process plays pod, Service and load balancer at once: instead of the pod's
``0.0.0.0:8080`` it listens on the host and port of the pod's access URL
(``CODER_SATELLITE_ACCESS_URL`` of a satellite, ``CODER_ACCESS_URL`` of a workspace proxy),
which must be a loopback address (the lab inventories give each region its own, e.g.
``http://127.0.1.1:17081``). Metrics, when the pod enables them, go to a free loopback port.

A changed env (a new token in the Secret, upgraded values) restarts the process; a
Deployment that is gone or scaled to 0 stops it (SIGTERM, SIGKILL after a grace period);
a process that dies is restarted with backoff. The same tick tells the Coder emulator the
version of the lab's primary release (``coder_migrate/lab/primary_release.py``). What runs
is written to ``<state>/pods.json`` (no secret values, only a hash of the env); output goes
to ``<state>/logs/pods/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coder_migrate.errors import CoderMigrateError, LabError, redact
from coder_migrate.lab.load_balancers import provision
from coder_migrate.lab.paths import StateLayout
from coder_migrate.lab.pod_processes import (
    STOP_GRACE_SECONDS,
    ForkServerClient,
    PodChild,
    PodProcess,
    stop_orphans,
)
from coder_migrate.lab.pod_spec import (
    PROVISIONER_MODE,
    PodPlan,
    child_environment,
    decode_secret,
    plan_pod,
    played_containers,
)
from coder_migrate.lab.primary_release import PrimaryRelease
from coder_migrate.lab.process import ProcessRef, ref_for

__all__ = ["PodSupervisor", "supervisor_command"]

log = logging.getLogger("coder_migrate.lab.pods")

POLL_SECONDS = 0.75
#: A watch of a cluster's Deployments lasts this long before it is opened again.
WATCH_SECONDS = 60
WATCH_RETRY_SECONDS = 2.0
WAKE_GAP_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 30.0
#: A process that lived this long has its backoff reset.
STABLE_SECONDS = 10.0
KUBE_TIMEOUT_SECONDS = 5.0
#: Helm keeps release history in Secrets of this type: large, and never referenced by pods.
_HELM_RELEASE_SECRETS = "type!=helm.sh/release.v1"


# -- the supervisor ---------------------------------------------------------------------------


@dataclass
class _Backoff:
    failures: int = 0
    not_before: float = 0.0


class PodSupervisor:
    """Runs the region pods of the lab's clusters; :meth:`tick` once per poll interval."""

    def __init__(
        self,
        state: StateLayout,
        clusters: Mapping[str, str],
        *,
        grace: float = STOP_GRACE_SECONDS,
        primary: PrimaryRelease | None = None,
        load_balancers: Iterable[str] = (),
    ) -> None:
        self.state = state
        self.clusters = dict(clusters)  # cluster name -> kube context
        #: Contexts whose LoadBalancer Services the lab gives an address (every cluster).
        self.load_balancer_contexts = tuple(load_balancers)
        #: The primary release the emulator follows (coder_migrate/lab/primary_release.py).
        self.primary = primary
        self.grace = grace
        self.children: dict[str, PodChild] = {}
        self.stopping: list[PodChild] = []
        self.backoff: dict[str, _Backoff] = {}
        self.restarts: dict[str, int] = {}
        self.problems: dict[str, str] = {}  # key or cluster -> last reason logged
        self.cluster_errors: dict[str, str] = {}
        self._written = ""
        self._kube: dict[str, Any] = {}
        self.forks = ForkServerClient(state.pod_logs / "forkserver.log")
        #: Set by a cluster's Deployment watch: tick now (see :meth:`run`).
        self.wake = threading.Event()

    # -- observing -------------------------------------------------------------------------

    def _apis(self, context: str) -> tuple[Any, Any]:
        from coder_migrate.providers.kube import KubeCluster

        cluster = self._kube.get(context)
        if cluster is None:
            cluster = KubeCluster(context, str(self.state.kubeconfig))
            self._kube[context] = cluster
        return cluster.apps(), cluster.core()

    def observe(self, cluster: str, context: str) -> dict[str, PodPlan] | None:
        """The pods CLUSTER should run now; None when the cluster cannot be read."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            apps, core = self._apis(context)
            # Raw JSON: the client's model objects cost more than the whole rest of a tick.
            listed = apps.list_deployment_for_all_namespaces(
                _preload_content=False, _request_timeout=KUBE_TIMEOUT_SECONDS
            )
            deployments = json.loads(listed.data).get("items") or []
            candidates = [d for d in deployments if played_containers(d)]
            secrets: dict[tuple[str, str], dict[str, str]] = {}
            if candidates:
                response = core.list_secret_for_all_namespaces(
                    field_selector=_HELM_RELEASE_SECRETS,
                    _preload_content=False,
                    _request_timeout=KUBE_TIMEOUT_SECONDS,
                )
                for item in json.loads(response.data).get("items") or []:
                    meta = item.get("metadata") or {}
                    secrets[(meta.get("namespace", ""), meta.get("name", ""))] = decode_secret(
                        item
                    )
        except (ApiException, HTTPError, OSError, ValueError, CoderMigrateError) as error:
            reason = f"cannot list deployments in {context}: {type(error).__name__}"
            if isinstance(error, ApiException):
                reason += f" {error.status} {error.reason}"
            self._problem(cluster, reason)
            self.cluster_errors[cluster] = reason
            return None
        self._problem(cluster, "")
        self.cluster_errors.pop(cluster, None)

        plans: dict[str, PodPlan] = {}
        for deployment in candidates:
            meta = deployment.get("metadata") or {}
            key = f"{cluster}/{meta.get('namespace')}/{meta.get('name')}"
            try:
                plan = plan_pod(cluster, deployment, lambda ns, name: secrets.get((ns, name)))
            except LabError as error:
                self._problem(key, f"{key}: not started: {error}")
                continue
            self._problem(key, "")
            if plan is not None:
                plans[plan.key] = plan
        return plans

    def _problem(self, key: str, reason: str) -> None:
        """Log a problem once (and its end), not on every tick."""
        previous = self.problems.get(key, "")
        if reason == previous:
            return
        if reason:
            log.warning("%s", redact(reason))
            self.problems[key] = reason
        else:
            log.info("%s: ok again", key)
            self.problems.pop(key, None)

    # -- acting ----------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        desired: dict[str, PodPlan] = {}
        readable: set[str] = set()
        for cluster, context in self.clusters.items():
            plans = self.observe(cluster, context)
            if plans is not None:
                readable.add(cluster)
                desired.update(plans)
        self._reap(now)
        for key, child in list(self.children.items()):
            if child.plan.cluster not in readable:
                continue  # cannot tell: leave it running
            wanted = desired.get(key)
            if wanted is None:
                log.info("%s: deployment gone or scaled to 0; stopping pid %d", key, child.ref.pid)
                self._begin_stop(key, now)
            elif wanted.env_hash != child.plan.env_hash:
                changed = _changed_names(child.plan, wanted)
                log.info("%s: env changed (%s); restarting pid %d", key, changed, child.ref.pid)
                self._begin_stop(key, now)
                self.backoff.pop(key, None)
        self._advance_stops(now)
        taken = {c.plan.listen for c in [*self.children.values(), *self.stopping]}
        for key, plan in sorted(desired.items()):
            if key in self.children:
                continue
            if any(c.plan.key == key for c in self.stopping):
                continue  # the old process still holds the port
            backoff = self.backoff.get(key)
            if backoff is not None and now < backoff.not_before:
                continue
            if plan.listen[1] and plan.listen in taken:
                self._problem(
                    key,
                    f"{key}: not started: {plan.listen[0]}:{plan.listen[1]} "
                    "is the access URL of another region pod",
                )
                continue
            self._start(plan, now)
            taken.add(plan.listen)
        self._follow_primary()
        self._serve_load_balancers()
        self._write_state()

    def _serve_load_balancers(self) -> None:
        """Play each cluster's cloud load-balancer controller (lab/load_balancers.py)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        for context in self.load_balancer_contexts:
            try:
                given = provision(self._apis(context)[1], KUBE_TIMEOUT_SECONDS)
            except (ApiException, HTTPError, OSError, ValueError, CoderMigrateError) as error:
                self._problem(f"lb/{context}", f"load balancers of {context}: "
                                               f"{type(error).__name__}")
                continue
            self._problem(f"lb/{context}", "")
            for what in given:
                log.info("%s: load balancer address %s", context, what)

    def _follow_primary(self) -> None:
        """The emulator plays the version of the lab's primary release."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        primary = self.primary
        if primary is None:
            return
        key = f"primary release {primary.name}"
        try:
            apps, _ = self._apis(primary.context)
            listed = apps.list_namespaced_deployment(
                primary.namespace, _preload_content=False, _request_timeout=KUBE_TIMEOUT_SECONDS
            )
            deployments = json.loads(listed.data).get("items") or []
        except (ApiException, HTTPError, OSError, ValueError, CoderMigrateError) as error:
            self._problem(key, f"{key}: cannot list deployments: {type(error).__name__}")
            return
        before = primary.version
        problem = primary.follow(deployments) or self._follow_psk(primary, deployments)
        self._problem(key, f"{key}: {problem}" if problem else "")
        if primary.version != before:
            log.info("%s runs Coder %s: the emulator plays it", key, primary.version)

    def _follow_psk(self, primary: PrimaryRelease, deployments: list[dict[str, Any]]) -> str:
        """The emulator takes the provisioner key the primary's pod reads from its Secret."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        reference = primary.psk_reference(deployments)
        psk = ""
        if reference is not None:
            try:
                _, core = self._apis(primary.context)
                response = core.read_namespaced_secret(
                    reference[0], primary.namespace, _preload_content=False,
                    _request_timeout=KUBE_TIMEOUT_SECONDS,
                )
                psk = decode_secret(json.loads(response.data)).get(reference[1], "")
            except ApiException as error:
                if error.status != 404:
                    return f"cannot read the provisioner key: {error.status} {error.reason}"
            except (HTTPError, OSError, ValueError, CoderMigrateError) as error:
                return f"cannot read the provisioner key: {type(error).__name__}"
        return primary.tell_psk(psk)

    def _reap(self, now: float) -> None:
        """Children that died on their own: restart later, with backoff."""
        for key, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            del self.children[key]
            backoff = self.backoff.setdefault(key, _Backoff())
            if now - child.started_at >= STABLE_SECONDS:
                backoff.failures = 0
            delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2**backoff.failures)
            backoff.failures += 1
            backoff.not_before = now + delay
            log.warning(
                "%s: pid %d exited with %s; restarting in %.1f s (see %s)",
                key,
                child.ref.pid,
                code,
                delay,
                child.log_file,
            )

    def _start(self, plan: PodPlan, now: float) -> None:
        log_file = self.state.pod_logs / f"{plan.cluster}-{plan.namespace}-{plan.release}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        env_file = self.state.pod_logs / "empty.env"
        env_file.touch()
        metrics_port = _free_loopback_port() if plan.metrics else None
        env = child_environment(plan, metrics_port, env_file, os.environ)
        module = "coder_migrate.proxy"
        if plan.mode == PROVISIONER_MODE:
            module = "coder_migrate.lab.provisionerd"
            # A daemon is named after its pod (unique across the lab's clusters).
            env["CODER_LAB_POD_NAME"] = f"{plan.deployment}-{plan.cluster}-lab"
            env["CODER_LAB_REPLICAS"] = str(plan.replicas)
        with log_file.open("ab") as handle:
            handle.write(
                f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} lab pod {plan.key} ({plan.mode}) on "
                f"{plan.listen[0]}:{plan.listen[1]}, env sha256 {plan.env_hash[:12]}\n".encode()
            )
            handle.flush()
        # In the supervisor's process group (no new session): stopping the group stops all.
        process: PodProcess | None = self.forks.spawn(module, env, log_file)
        if process is None:
            with log_file.open("ab") as handle:
                process = subprocess.Popen(
                    [sys.executable, "-m", module],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
        ref = ref_for(plan.key, process.pid) or ProcessRef(
            name=plan.key, pid=process.pid, start_ticks=-1
        )
        restarts = self.restarts.get(plan.key, -1) + 1
        self.restarts[plan.key] = restarts
        self.children[plan.key] = PodChild(
            plan=plan,
            process=process,
            ref=ref,
            log_file=log_file,
            metrics=f"127.0.0.1:{metrics_port}" if metrics_port else "",
            started_at=now,
            started_wall=time.time(),
            restarts=restarts,
        )
        log.info(
            "%s: started pid %d (%s) on %s:%d, env sha256 %s",
            plan.key,
            process.pid,
            plan.mode,
            *plan.listen,
            plan.env_hash[:12],
        )

    def _begin_stop(self, key: str, now: float) -> None:
        child = self.children.pop(key)
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGTERM)
        child.stopping = True
        child.stop_deadline = now + self.grace
        self.stopping.append(child)

    def _advance_stops(self, now: float) -> None:
        for child in list(self.stopping):
            if child.process.poll() is not None:
                self.stopping.remove(child)
                log.info("%s: pid %d stopped", child.plan.key, child.ref.pid)
            elif child.stop_deadline is not None and now >= child.stop_deadline:
                log.warning("%s: pid %d ignored SIGTERM; SIGKILL", child.plan.key, child.ref.pid)
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                child.stop_deadline = None  # killed: reaped on a later tick

    def stop_all(self) -> None:
        """SIGTERM every child, wait up to the grace period, SIGKILL what is left."""
        now = time.monotonic()
        for key in list(self.children):
            self._begin_stop(key, now)
        deadline = now + self.grace
        while self.stopping and time.monotonic() < deadline:
            self._advance_stops(time.monotonic())
            time.sleep(0.05)
        for child in self.stopping:
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=self.grace)
        self.stopping.clear()
        self.forks.close()
        self._write_state()

    def _write_state(self) -> None:
        document = {
            "supervisor_pid": os.getpid(),
            "clusters": {
                name: {"context": context, "error": self.cluster_errors.get(name, "")}
                for name, context in self.clusters.items()
            },
            "pods": [c.record() for c in [*self.children.values(), *self.stopping]],
            "primary": self.primary.record() if self.primary is not None else None,
            "refused": {
                key: reason for key, reason in self.problems.items() if key.count("/") == 2
            },
        }
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        if text == self._written:
            return
        temporary = self.state.pods_state.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.rename(self.state.pods_state)
        self._written = text

    # -- running ---------------------------------------------------------------------------

    def watch(self, context: str, stop_event: threading.Event) -> None:
        """Wake the supervisor on every change to CONTEXT's Deployments (a thread per cluster):
        a Deployment helm just created starts its pod at once, not at the next tick. The
        events are not read: the tick lists everything, as without a watch."""
        from coder_migrate.providers.kube import KubeCluster

        while not stop_event.is_set():
            try:
                apps = KubeCluster(context, str(self.state.kubeconfig)).apps()
                while not stop_event.is_set():
                    stream: Any = apps.list_deployment_for_all_namespaces(
                        watch=True, timeout_seconds=WATCH_SECONDS, _preload_content=False,
                        _request_timeout=(KUBE_TIMEOUT_SECONDS, WATCH_SECONDS + 5),
                    )
                    try:
                        for _ in stream.stream(4096, decode_content=True):
                            self.wake.set()
                    finally:
                        stream.release_conn()
            except Exception as error:  # the tick still polls; open it again later
                log.debug("watch of %s: %s", context, type(error).__name__)
                stop_event.wait(WATCH_RETRY_SECONDS)

    def run(self, stop_event: threading.Event, interval: float = POLL_SECONDS) -> None:
        stop_orphans(self.state)
        log.info("region pods supervisor for %s", ", ".join(self.clusters.values()))
        for context in self.clusters.values():
            threading.Thread(target=self.watch, args=(context, stop_event), daemon=True,
                             name=f"watch {context}").start()
        try:
            while not stop_event.is_set():
                started = time.monotonic()
                self.wake.clear()
                try:
                    self.tick(started)
                except Exception:  # one bad tick must not take the pods down
                    log.exception("tick failed")
                # Until the next tick or a watch event, whichever comes first; at least
                # WAKE_GAP between ticks, so a burst of events costs a few ticks, not one each.
                stop_event.wait(WAKE_GAP_SECONDS)
                self.wake.wait(max(0.0, interval - (time.monotonic() - started)))
        finally:
            self.stop_all()
            log.info("region pods supervisor stopped")


def _changed_names(old: PodPlan, new: PodPlan) -> str:
    names = sorted(
        name for name in set(old.env) | set(new.env) if old.env.get(name) != new.env.get(name)
    )
    if old.listen != new.listen:
        names.append("listen address")
    return ", ".join(names) or "nothing visible"


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def supervisor_command(
    state: StateLayout, clusters: Mapping[str, str], primary: PrimaryRelease | None = None,
    load_balancers: Iterable[str] = (),
) -> list[str]:
    command = [sys.executable, "-m", "coder_migrate.lab.pods", "--state-dir", str(state.root)]
    for name, context in clusters.items():
        command += ["--cluster", f"{name}={context}"]
    for context in load_balancers:
        command += ["--load-balancers", context]
    if primary is not None:
        command += [
            "--primary", f"{primary.context}={primary.namespace}/{primary.release}",
            "--coderd", primary.coderd_url,
        ]
        if not primary.follow_version:
            command.append("--primary-key-only")
    return command


def _parse_primary(value: str | None, coderd: str | None, state: StateLayout,
                   key_only: bool = False) -> PrimaryRelease | None:
    if value is None:
        return None
    context, _, where = value.partition("=")
    namespace, _, release = where.partition("/")
    if not (context and namespace and release and coderd):
        raise SystemExit(f"--primary {value!r}: expected CONTEXT=NAMESPACE/RELEASE and --coderd")
    return PrimaryRelease(context, namespace, release, coderd, state.coder_token,
                          follow_version=not key_only)


def _parse_clusters(values: Iterable[str]) -> dict[str, str]:
    clusters = {}
    for value in values:
        name, sep, context = value.partition("=")
        if not sep or not name or not context:
            raise SystemExit(f"--cluster {value!r}: expected NAME=CONTEXT")
        clusters[name] = context
    return clusters


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m coder_migrate.lab.pods",
        description="Run the lab's region pods (started by `coder-migrate lab up`).",
    )
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--cluster", action="append", default=[], metavar="NAME=CONTEXT")
    parser.add_argument("--interval", type=float, default=POLL_SECONDS)
    parser.add_argument("--primary", metavar="CONTEXT=NAMESPACE/RELEASE",
                        help="the primary release whose version the emulator plays")
    parser.add_argument("--coderd", metavar="URL", help="the lab's Coder emulator")
    parser.add_argument("--load-balancers", action="append", default=[], metavar="CONTEXT",
                        help="give this cluster's LoadBalancer Services an address")
    parser.add_argument("--primary-key-only", action="store_true",
                        help="follow only the primary's provisioner key, not its version (v2)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stdout,
    )
    stop_event = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_event.set())
    state = StateLayout(args.state_dir.resolve())
    supervisor = PodSupervisor(
        state, _parse_clusters(args.cluster),
        primary=_parse_primary(args.primary, args.coderd, state, args.primary_key_only),
        load_balancers=args.load_balancers,
    )
    supervisor.run(stop_event, args.interval)


if __name__ == "__main__":
    main()
