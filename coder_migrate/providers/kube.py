"""Kubernetes adapter: the kubernetes client, one per (kubeconfig, context), made async.

The official client is synchronous, so every call runs in a worker thread
(``asyncio.to_thread``). Library errors are translated here, once, into :class:`KubeError`
with the context, the verb and the object, never a credential.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error

from coder_migrate import sensitive
from coder_migrate.errors import KubeError

__all__ = ["KubeCluster", "Lease", "PodStatus", "cluster_for"]

T = TypeVar("T")
U = TypeVar("U")

MANAGED_BY = {"app.kubernetes.io/managed-by": "coder-migrate"}
#: (connect, read) seconds for every apiserver request; no call the toolkit makes (no watch)
#: legitimately waits longer for the server's first byte.
REQUEST_TIMEOUT_SECONDS = (5.0, 30.0)


def _request_with_deadline(
    request: Callable[..., Any], *args: Any, _request_timeout: Any = None, **kwargs: Any
) -> Any:
    """The rest client's ``request`` with :data:`REQUEST_TIMEOUT_SECONDS` as the default."""
    return request(*args, _request_timeout=_request_timeout or REQUEST_TIMEOUT_SECONDS,
                   **kwargs)


@dataclass(frozen=True)
class PodStatus:
    name: str
    phase: str
    ready: bool


def _kubeconfig_path(kubeconfig: str | None) -> str | None:
    if kubeconfig:
        return str(Path(kubeconfig).expanduser())
    return os.environ.get("KUBECONFIG") or None


@cache
def cluster_for(context: str, kubeconfig: str | None = None) -> KubeCluster:
    """One client per (context, kubeconfig) for the life of the process."""
    return KubeCluster(context, kubeconfig)


class KubeCluster:
    """One cluster, addressed by its kubeconfig context."""

    def __init__(self, context: str, kubeconfig: str | None = None) -> None:
        self.context = context
        self.kubeconfig = _kubeconfig_path(kubeconfig)
        self._api_client: client.ApiClient | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def _client(self) -> client.ApiClient:
        if self._api_client is None:
            try:
                self._api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=self.kubeconfig, context=self.context, persist_config=False
                )
            except (ConfigException, OSError, TypeError, ValueError) as error:
                where = self.kubeconfig or "~/.kube/config"
                raise KubeError(
                    f"kube context {self.context!r} cannot be used from {where}: "
                    f"{_first_line(error)}"
                ) from None
            # Bounded waits: a dead cluster must fail a plan, not hang it, and an apiserver
            # that accepts connections but never answers (stopped, overloaded) must stop the
            # wave naming its cluster instead of holding the whole apply. The client has no
            # default deadline, so every request gets one unless a call sets its own.
            self._api_client.configuration.retries = 1
            self._api_client.rest_client.request = partial(  # type: ignore[method-assign]
                _request_with_deadline, self._api_client.rest_client.request
            )
        return self._api_client

    async def _call(self, what: str, function: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(function)
        except ApiException as error:
            raise KubeError(
                f"{self.context}: {what}: {error.status} {error.reason}{_api_message(error)}"
            ) from None
        except (Urllib3Error, OSError) as error:
            # urllib3 wraps the last error of a retried request in MaxRetryError.
            cause = error.reason if isinstance(error, MaxRetryError) else error
            if isinstance(cause, (ReadTimeoutError, ConnectTimeoutError)):
                connect, read = REQUEST_TIMEOUT_SECONDS
                raise KubeError(
                    f"{self.context}: {what}: the apiserver did not answer (deadlines: "
                    f"connect {connect:g} s, read {read:g} s)"
                ) from None
            raise KubeError(
                f"{self.context}: {what}: cluster unreachable ({type(error).__name__})"
            ) from None

    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._client())

    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self._client())

    def coordination(self) -> client.CoordinationV1Api:
        return client.CoordinationV1Api(self._client())

    def authorization(self) -> client.AuthorizationV1Api:
        return client.AuthorizationV1Api(self._client())

    # -- reads ------------------------------------------------------------------------------

    async def server_version(self) -> str:
        info = await self._call(
            "read server version", lambda: client.VersionApi(self._client()).get_code()
        )
        return str(info.git_version)

    async def namespace_exists(self, name: str) -> bool:
        def read() -> bool:
            return _unless(404, lambda: self.core().read_namespace(name) is not None, False)

        return await self._call(f"read namespace {name}", read)

    async def secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """Keys of a Secret (values are never returned), or None when it does not exist."""

        def read() -> set[str] | None:
            secret = _unless(404, lambda: self.core().read_namespaced_secret(name, namespace), None)
            return None if secret is None else set((secret.data or {}).keys())

        return await self._call(f"read secret {namespace}/{name}", read)

    async def secret_annotations(self, namespace: str, name: str) -> dict[str, str] | None:
        """Annotations of a Secret (never its data), or None when it does not exist."""

        def read() -> dict[str, str] | None:
            secret = _unless(404, lambda: self.core().read_namespaced_secret(name, namespace), None)
            if secret is None:
                return None
            meta = secret.metadata
            return {str(k): str(v) for k, v in ((meta.annotations if meta else None) or {}).items()}

        return await self._call(f"read secret {namespace}/{name}", read)

    async def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        def read() -> str | None:
            secret = _unless(404, lambda: self.core().read_namespaced_secret(name, namespace), None)
            if secret is None:
                return None
            encoded = (secret.data or {}).get(key)
            if encoded is None:
                return None
            # Whatever a Secret holds is scrubbed from all output once read.
            return sensitive.register(base64.b64decode(encoded).decode())

        return await self._call(f"read secret {namespace}/{name}", read)

    async def secrets_data(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Raw items (metadata and base64 ``data``) of the Secrets matching a label selector.

        The JSON is read as it comes: building client models for large Secrets (helm's
        release records) costs more than the request.
        """

        def read() -> list[dict[str, Any]]:
            response: Any = self.core().list_namespaced_secret(
                namespace, label_selector=selector, _preload_content=False
            )
            try:
                items = json.loads(response.data).get("items") or []
            finally:
                response.release_conn()
            return [item for item in items if isinstance(item, dict)]

        return await self._call(f"list secrets {selector} in {namespace}", read)

    async def pods(self, namespace: str, selector: str = "") -> list[PodStatus]:
        def read() -> list[PodStatus]:
            items = self.core().list_namespaced_pod(namespace, label_selector=selector).items
            statuses = []
            for pod in items:
                status = pod.status or client.V1PodStatus()
                conditions = status.conditions or []
                ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
                name = pod.metadata.name if pod.metadata else ""
                statuses.append(PodStatus(str(name), status.phase or "", ready))
            return statuses

        return await self._call(f"list pods in {namespace}", read)

    async def service_address(self, namespace: str, name: str) -> str | None:
        """How clients reach a Service: a LoadBalancer's external address (``pending`` until
        the cloud gives one), ``NodePort <ports>`` or ``ClusterIP <ip>``; None when absent."""

        def read() -> str | None:
            service = _unless(404, lambda: self.core().read_namespaced_service(name, namespace),
                              None)
            if service is None or service.spec is None:
                return None
            kind = str(service.spec.type or "ClusterIP")
            if kind == "LoadBalancer":
                ingress = (service.status.load_balancer.ingress
                           if service.status and service.status.load_balancer else None) or []
                found = [str(i.ip or i.hostname) for i in ingress if i.ip or i.hostname]
                return f"LoadBalancer {', '.join(found) if found else 'pending'}"
            if kind == "NodePort":
                ports = [str(p.node_port) for p in service.spec.ports or [] if p.node_port]
                return f"NodePort {', '.join(ports)}"
            return f"{kind} {service.spec.cluster_ip or ''}".strip()

        return await self._call(f"read service {namespace}/{name}", read)

    async def ready_by_zone(self, namespace: str, selector: str) -> dict[str, tuple[int, int]]:
        """Pods matching *selector* per zone of their node (``topology.kubernetes.io/zone``;
        ``-`` for an unscheduled pod or a node without the label): (ready, total)."""

        def read() -> dict[str, tuple[int, int]]:
            pods = self.core().list_namespaced_pod(namespace, label_selector=selector).items
            zones: dict[str, str] = {}
            counts: dict[str, tuple[int, int]] = {}
            for pod in pods:
                node = pod.spec.node_name if pod.spec else None
                if node and node not in zones:
                    try:
                        found = _unless(404, partial(self.core().read_node, node), None)
                    except ApiException as error:
                        if error.status != 403:
                            raise
                        found = None  # nodes are cluster-scoped: a namespaced operator sees "-"
                    labels = (found.metadata.labels if found and found.metadata else None) or {}
                    zones[node] = labels.get("topology.kubernetes.io/zone", "-")
                zone = zones.get(node or "", "-")
                conditions = (pod.status.conditions if pod.status else None) or []
                ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
                done, total = counts.get(zone, (0, 0))
                counts[zone] = (done + ready, total + 1)
            return dict(sorted(counts.items()))

        return await self._call(f"list pods in {namespace}", read)

    async def can_i(self, verb: str, resource: str, namespace: str = "", group: str = "") -> bool:
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb, resource=resource, namespace=namespace or None, group=group
                )
            )
        )
        result = await self._call(
            f"check access to {verb} {resource}",
            lambda: self.authorization().create_self_subject_access_review(review),
        )
        return bool(result.status and result.status.allowed)

    # -- writes -----------------------------------------------------------------------------

    async def ensure_namespace(self, name: str) -> bool:
        """Create the namespace if missing; return whether it was created."""

        def create() -> bool:
            body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=MANAGED_BY))
            return _unless(409, lambda: self.core().create_namespace(body) is not None, False)

        return await self._call(f"create namespace {name}", create)

    async def put_secret(
        self,
        namespace: str,
        name: str,
        values: Mapping[str, str],
        *,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """Create or replace an Opaque Secret. The values never appear in errors."""
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=name, namespace=namespace, labels=MANAGED_BY,
                annotations=dict(annotations or {}),
            ),
            type="Opaque",
            string_data=dict(values),
        )

        def write() -> None:
            try:
                self.core().create_namespaced_secret(namespace, body)
            except ApiException as error:
                if error.status != 409:
                    raise
                self.core().replace_namespaced_secret(name, namespace, body)

        await self._call(f"write secret {namespace}/{name}", write)

    async def restart_deployments(self, namespace: str, selector: str) -> list[str]:
        """Roll the pods of matching Deployments (as ``kubectl rollout restart`` does), so they
        read Secrets again; return the names restarted."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return await self.roll_deployments(
            namespace, selector, {"kubectl.kubernetes.io/restartedAt": stamp}
        )

    async def deployment_annotations(self, namespace: str, selector: str) -> dict[str, str]:
        """Pod template annotations of the Deployments matching *selector*, merged (the
        first Deployment's value of a key wins); {} when there is none."""

        def read() -> dict[str, str]:
            found: dict[str, str] = {}
            for deployment in self.apps().list_namespaced_deployment(
                namespace, label_selector=selector
            ).items:
                template = deployment.spec.template if deployment.spec else None
                meta = template.metadata if template is not None else None
                for key, value in ((meta.annotations if meta else None) or {}).items():
                    found.setdefault(str(key), str(value))
            return found

        return await self._call(f"read deployments {selector} in {namespace}", read)

    async def roll_deployments(
        self, namespace: str, selector: str, annotations: Mapping[str, str]
    ) -> list[str]:
        """Roll the pods of matching Deployments by setting pod template *annotations* (a
        new template, as ``kubectl rollout restart`` makes); return the names rolled."""
        patch = {"spec": {"template": {"metadata": {"annotations": dict(annotations)}}}}

        def roll() -> list[str]:
            apps = self.apps()
            listed = apps.list_namespaced_deployment(namespace, label_selector=selector).items
            names = [str(d.metadata.name) for d in listed if d.metadata is not None]
            for name in names:
                apps.patch_namespaced_deployment(name, namespace, patch)
            return names

        return await self._call(f"roll deployments {selector} in {namespace}", roll)

    async def delete_secret(self, namespace: str, name: str) -> bool:
        def delete() -> bool:
            return _unless(
                404, lambda: bool(self.core().delete_namespaced_secret(name, namespace)), False
            )

        return await self._call(f"delete secret {namespace}/{name}", delete)

    async def read_config_map(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        """Data and resourceVersion of a ConfigMap, or None when it does not exist."""

        def read() -> tuple[dict[str, str], str] | None:
            found = _unless(
                404, lambda: self.core().read_namespaced_config_map(name, namespace), None
            )
            if found is None:
                return None
            version = found.metadata.resource_version if found.metadata else None
            return dict(found.data or {}), str(version)

        return await self._call(f"read configmap {namespace}/{name}", read)

    async def write_config_map(
        self, namespace: str, name: str, data: Mapping[str, str], resource_version: str | None
    ) -> bool:
        """Create (version None) or replace at *resource_version*; False on a lost race."""
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=name, namespace=namespace, labels=MANAGED_BY,
                resource_version=resource_version,
            ),
            data=dict(data),
        )

        def write() -> bool:
            if resource_version is None:
                return _unless(
                    409, lambda: bool(self.core().create_namespaced_config_map(namespace, body)),
                    False,
                )
            # A replace at a stale resourceVersion is a 409 Conflict: someone wrote first.
            return _unless(
                409, lambda: bool(self.core().replace_namespaced_config_map(name, namespace, body)),
                False,
            )

        return await self._call(f"write configmap {namespace}/{name}", write)

    async def read_lease(self, namespace: str, name: str) -> Lease | None:
        def read() -> Lease | None:
            found = _unless(
                404, lambda: self.coordination().read_namespaced_lease(name, namespace), None
            )
            return None if found is None else Lease.of(found)

        return await self._call(f"read lease {namespace}/{name}", read)

    async def create_lease(self, namespace: str, lease: Lease) -> bool:
        """Create *lease*; ``False`` when one of that name exists already."""

        def create() -> bool:
            return _unless(
                409,
                lambda: bool(self.coordination().create_namespaced_lease(namespace, lease.body())),
                False,
            )

        return await self._call(f"create lease {namespace}", create)

    async def replace_lease(self, namespace: str, lease: Lease) -> bool:
        """Replace the lease at ``lease.resource_version``; ``False`` when someone wrote first."""

        def replace() -> bool:
            return _unless(
                409,
                lambda: bool(self.coordination().replace_namespaced_lease(
                    lease.name, namespace, lease.body())),
                False,
            )

        return await self._call(f"replace lease {namespace}/{lease.name}", replace)

    async def delete_lease(self, namespace: str, name: str) -> None:
        def delete() -> None:
            _unless(404, lambda: self.coordination().delete_namespaced_lease(name, namespace), None)

        await self._call(f"delete lease {namespace}/{name}", delete)


@dataclass(frozen=True)
class Lease:
    """A coordination.k8s.io Lease as coder-migrate reads and writes it."""

    name: str
    holder: str
    duration_seconds: int
    acquired: dt.datetime | None
    renewed: dt.datetime | None
    annotations: Mapping[str, str]
    resource_version: str | None = None

    @classmethod
    def of(cls, found: Any) -> Lease:
        spec, meta = found.spec, found.metadata
        return cls(
            name=meta.name, holder=spec.holder_identity or "",
            duration_seconds=spec.lease_duration_seconds or 0, acquired=spec.acquire_time,
            renewed=spec.renew_time, annotations=dict(meta.annotations or {}),
            resource_version=meta.resource_version,
        )

    def body(self) -> client.V1Lease:
        return client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.name, resource_version=self.resource_version,
                annotations=dict(self.annotations),
            ),
            spec=client.V1LeaseSpec(
                holder_identity=self.holder, lease_duration_seconds=self.duration_seconds,
                acquire_time=self.acquired, renew_time=self.renewed,
            ),
        )


def _unless(status: int, function: Callable[[], T], default: U) -> T | U:
    """Call *function*; an API answer of *status* (404 absent, 409 exists) gives *default*."""
    try:
        return function()
    except ApiException as error:
        if error.status == status:
            return default
        raise


def _api_message(error: ApiException) -> str:
    import json

    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return f": {message}" if message else ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
