"""``lab up --world v1.20``: the releases of the lab's world before the migration
(docs/lab.md "A v1.20 world"), installed by the lab as an operator would have installed them.

- the primary: coder/coder 1.20.0 (the ``coder-v1.20`` stand-in) as the release the lab's world
  names (``coder`` in namespace ``coder`` of ``lab-primary``), so the emulator, which follows
  that release, is Coder 1.20;
- per region, per provider of the world: coder/workspace-provider (the ``workspace-provider``
  stand-in) in the provider's namespace, with what ``coder providers create`` would have given
  the operator (V1 §4: the provider's envproxy token and access URL, its cluster address; the
  primary's URL as ``cemanager.accessURL``).

A release that exists already is left as it is (a restarted lab keeps its history, and an
upgraded primary is never taken back to 1.20).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from coder_migrate.errors import LabError
from coder_migrate.lab.settings import LabSettings
from coder_migrate.lab.tools import StandInChart, chart_path, helm_binary
from coder_migrate.lab.world import LabWorld, ProviderRelease, lab_world
from coder_migrate.providers.helm import ChartSource, HelmClient
from coder_migrate.providers.kube import KubeCluster

__all__ = ["emulator_seed", "envproxy_access_url", "install_world"]

EMULATOR_TIMEOUT_SECONDS = 10.0
#: The port of the first region's first envproxy before ``--port-offset`` (the region's
#: satellite or proxy is on 17081 of the same address).
ENVPROXY_BASE_PORT = 17181
#: What every lab install of these charts must set (coder_migrate/lab/charts/README.md):
#: their own nginx ingress controller has a LoadBalancer Service, and the lab has none.
_NO_DEFAULT_INGRESS = {"ingress": {"useDefault": False}}


def envproxy_access_url(settings: LabSettings, region: str, provider_index: int) -> str:
    """Where the lab plays a provider's envproxy: the region's loopback address
    (127.0.1.N, as its satellite) on a port of its own; moved by ``--port-offset``."""
    number = settings.regions.index(region) + 1
    port = ENVPROXY_BASE_PORT + settings.port_offset + (number - 1) + 100 * provider_index
    return f"http://127.0.1.{number}:{port}"


def emulator_seed(settings: LabSettings) -> dict[str, Any]:
    """The emulator's ``--config`` for the world: the world's providers, each with the
    envproxy access URL the lab plays it on (an envproxy must listen on loopback)."""
    world = lab_world()
    providers = [
        {"name": provider.name,
         "envproxy_access_url": envproxy_access_url(settings, region, index),
         "devurl_host": f"*.{provider.name}.coder.lab.internal"}
        for region in settings.regions if region in world.regions
        for index, provider in enumerate(world.regions[region].providers)
    ]
    return {"regions": list(settings.regions), "providers": providers}


def _chart(name: StandInChart) -> ChartSource:
    return ChartSource(ref=str(chart_path(name)), version="", name=name)


class _World:
    def __init__(self, settings: LabSettings, kubeconfig: str, token: str) -> None:
        self.settings = settings
        self.kubeconfig = kubeconfig
        self.coder_url = f"http://127.0.0.1:{settings.coderd_port}"
        self.headers = {"Session-Token": token}
        self.installed: list[str] = []

    async def install(self, context: str, namespace: str, release: str, chart: StandInChart,
                      values: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """Install *release* unless it exists; *values* gives its values, asked only for a
        new install (it may issue a token)."""
        helm = HelmClient(context, self.kubeconfig, executable=str(helm_binary()))
        if await helm.release(namespace, release) is not None:
            return
        await KubeCluster(context, self.kubeconfig).ensure_namespace(namespace)
        await helm.install(namespace, release, _chart(chart), await values(), wait=True,
                           description="lab up --world v1.20")
        self.installed.append(f"{context}/{namespace}/{release}")

    async def provider_values(self, client: httpx.AsyncClient,
                              provider: ProviderRelease) -> dict[str, Any]:
        """What `coder providers create` prints for the provider's helm install."""
        listed = await client.get("/api/private/resource-pools")
        listed.raise_for_status()
        registered = {p["name"]: p for p in listed.json()["kubernetes"]}
        if provider.name not in registered:
            raise LabError(f"workspace provider {provider.name!r} of the lab's world is not "
                           "registered on the lab's primary")
        pool = registered[provider.name]
        issued = await client.post(f"/emulator/providers/{provider.name}/envproxy-token")
        issued.raise_for_status()
        return {
            **_NO_DEFAULT_INGRESS,
            "envproxy": {
                "accessURL": pool["envproxy_access_url"],
                "clusterAddress": pool["config"]["cluster_address"],
                "token": issued.json()["envproxy_token"],
            },
            "devurls": {"host": pool["devurl_host"]},
            "cemanager": {"accessURL": self.coder_url},
        }

    async def run(self, world: LabWorld) -> None:
        async def primary_values() -> dict[str, Any]:
            return dict(_NO_DEFAULT_INGRESS)

        contexts = {c.name: c.context for c in self.settings.clusters}
        async with httpx.AsyncClient(base_url=self.coder_url, headers=self.headers,
                                     timeout=EMULATOR_TIMEOUT_SECONDS) as client:
            installs = [self.install(self.settings.primary_cluster.context,
                                     world.primary.namespace,
                                     world.primary.release, "coder-v1.20", primary_values)]
            for region, region_world in world.regions.items():
                if region not in contexts:
                    continue
                installs += [
                    self.install(contexts[region], provider.namespace, provider.release,
                                 "workspace-provider",
                                 functools.partial(self.provider_values, client, provider))
                    for provider in region_world.providers
                ]
            await asyncio.gather(*installs)


def install_world(settings: LabSettings, kubeconfig: str, admin_token: str) -> list[str]:
    """Install the world's missing releases into the running lab; return those installed."""
    world = _World(settings, kubeconfig, admin_token)
    try:
        asyncio.run(world.run(lab_world()))
    except httpx.HTTPError as error:
        raise LabError(f"the lab's primary refused a step of the v1.20 world: {error}") from None
    return world.installed
