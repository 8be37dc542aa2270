"""An in-memory stand-in for the parts of a cluster the runner uses (ConfigMaps, a Lease,
namespaces), and an engine around it: unit tests of the runner, the lock and the journal
without a cluster. The integration tests run the same code against kube-apiserver."""

from __future__ import annotations

import dataclasses
from typing import Any

from coder_migrate.errors import KubeError
from coder_migrate.inventory import Topology
from coder_migrate.providers.kube import Lease


class FakeCluster:
    """ConfigMaps and Leases with resourceVersions and optimistic concurrency, like the API."""

    context = "fake"

    def __init__(self) -> None:
        self.namespaces: set[str] = set()
        self.maps: dict[tuple[str, str], tuple[dict[str, str], str]] = {}
        self.leases: dict[tuple[str, str], Lease] = {}
        self.versions = 0
        self.unreachable = False
        self.calls: list[str] = []

    def _next(self) -> str:
        self.versions += 1
        return str(self.versions)

    def _check(self, what: str) -> None:
        self.calls.append(what)
        if self.unreachable:
            raise KubeError(f"{self.context}: {what}: cluster unreachable (ConnectError)")

    async def namespace_exists(self, name: str) -> bool:
        self._check(f"read namespace {name}")
        return name in self.namespaces

    async def ensure_namespace(self, name: str) -> bool:
        self._check(f"create namespace {name}")
        created = name not in self.namespaces
        self.namespaces.add(name)
        return created

    async def read_config_map(self, namespace: str, name: str) -> Any:
        self._check(f"read configmap {namespace}/{name}")
        return self.maps.get((namespace, name))

    async def write_config_map(self, namespace: str, name: str, data: dict[str, str],
                               version: str | None) -> bool:
        self._check(f"write configmap {namespace}/{name}")
        current = self.maps.get((namespace, name))
        if (current[1] if current else None) != version:
            return False
        self.maps[(namespace, name)] = (dict(data), self._next())
        return True

    async def read_lease(self, namespace: str, name: str) -> Lease | None:
        self._check(f"read lease {namespace}/{name}")
        return self.leases.get((namespace, name))

    async def create_lease(self, namespace: str, lease: Lease) -> bool:
        self._check(f"create lease {namespace}")
        if (namespace, lease.name) in self.leases:
            return False
        self.leases[(namespace, lease.name)] = dataclasses.replace(
            lease, resource_version=self._next())
        return True

    async def replace_lease(self, namespace: str, lease: Lease) -> bool:
        self._check(f"replace lease {namespace}/{lease.name}")
        current = self.leases.get((namespace, lease.name))
        if current is None or current.resource_version != lease.resource_version:
            return False
        self.leases[(namespace, lease.name)] = dataclasses.replace(
            lease, resource_version=self._next())
        return True

    async def delete_lease(self, namespace: str, name: str) -> None:
        self._check(f"delete lease {namespace}/{name}")
        self.leases.pop((namespace, name), None)

    def take_lease(self, namespace: str, name: str, holder: str) -> None:
        """Another operator takes the lease over (as after a pause longer than its duration)."""
        current = self.leases[(namespace, name)]
        self.leases[(namespace, name)] = dataclasses.replace(
            current, holder=holder, resource_version=self._next())


class FakeEngine:
    """What the runner asks of an engine: the primary's cluster and the site names."""

    def __init__(self, topology: Topology, cluster: FakeCluster | None = None) -> None:
        self.topology = topology
        self.primary_kube = cluster or FakeCluster()
        self.state_namespace = topology.primary.namespace

    def site(self, name: str) -> Any:
        if name == self.topology.primary.name:
            return self.topology.primary
        return self.topology.region(name)
