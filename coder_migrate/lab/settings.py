"""What ``lab up`` serves and where: clusters, fixed loopback ports, names (docs/lab.md).

Every port is ``default + offset``; ``--port-offset`` (or ``CODER_MIGRATE_LAB_PORT_OFFSET``)
moves the whole lab, so a second lab can run beside the first.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

PORT_OFFSET_ENV = "CODER_MIGRATE_LAB_PORT_OFFSET"

DEFAULT_REGIONS: Final = ("us-east", "eu-west", "ap-southeast")
ZONE: Final = "lab.coder-migrate.test."
TSIG_KEY_NAME: Final = "coder-migrate-lab."
TSIG_ALGORITHM: Final = "hmac-sha256"
NODE_NAME: Final = "kwok-node-0"
#: Each cluster's kwok nodes, one per availability zone (label topology.kubernetes.io/zone),
#: so a site's coder_zones spread is scheduled for real; the first is NODE_NAME.
LAB_ZONES: Final = ("zone-a", "zone-b", "zone-c")

#: Fixed ports before the offset. Kubernetes API servers: primary, then one per region.
KUBE_APISERVER_BASE_PORT: Final = 16443
ETCD_BASE_PORT: Final = 16543
KWOK_CONTROLLER_BASE_PORT: Final = 16643
ETCD_PEER_BASE_PORT: Final = 16743
KUBE_CONTROLLER_MANAGER_BASE_PORT: Final = 16843
KUBE_SCHEDULER_BASE_PORT: Final = 16943
POWERDNS_DNS_PORT: Final = 15353
POWERDNS_API_PORT: Final = 15380
BIND_DNS_PORT: Final = 15354
CODERD_PORT: Final = 17080

CoderMode = Literal["v1.21", "v1.20", "v2", "v2-unlicensed"]
CODER_MODES: Final = ("v1.21", "v1.20", "v2", "v2-unlicensed")
#: Worlds ``lab up --world`` installs (coder_migrate/lab/world_releases.py).
World = Literal["v1.20"]
WORLDS: Final = ("v1.20",)


def region_names(count: int) -> list[str]:
    """The first three regions have fixed names; more get ``region-4``, ``region-5``, ..."""
    names = list(DEFAULT_REGIONS[:count])
    names += [f"region-{index}" for index in range(len(DEFAULT_REGIONS) + 1, count + 1)]
    return names


class ClusterSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    index: int
    apiserver_port: int
    etcd_port: int
    etcd_peer_port: int
    kwok_controller_port: int
    controller_manager_port: int
    scheduler_port: int

    @property
    def context(self) -> str:
        return f"lab-{self.name}"


class LabSettings(BaseModel):
    """Everything ``lab up`` needs to know that is not derived from the state directory."""

    model_config = ConfigDict(frozen=True)

    regions: tuple[str, ...]
    port_offset: int = 0
    coder_mode: CoderMode = "v1.21"
    #: The world ``lab up`` installs: None (the emulator's seed only) or ``v1.20`` (the
    #: releases of a Coder 1.20 deployment before the migration; the emulator starts as 1.20).
    world: World | None = None

    @classmethod
    def create(
        cls,
        regions: int = 3,
        port_offset: int = 0,
        coder_mode: CoderMode = "v1.21",
        world: World | None = None,
    ) -> LabSettings:
        return cls(
            regions=tuple(region_names(regions)), port_offset=port_offset,
            coder_mode="v1.20" if world == "v1.20" else coder_mode, world=world,
        )

    @property
    def primary_cluster(self) -> ClusterSettings:
        """The primary's cluster: the first one."""
        return self.clusters[0]

    @property
    def clusters(self) -> list[ClusterSettings]:
        names = ["primary", *self.regions]
        return [
            ClusterSettings(
                name=name,
                index=index,
                apiserver_port=KUBE_APISERVER_BASE_PORT + self.port_offset + index,
                etcd_port=ETCD_BASE_PORT + self.port_offset + index,
                etcd_peer_port=ETCD_PEER_BASE_PORT + self.port_offset + index,
                kwok_controller_port=KWOK_CONTROLLER_BASE_PORT + self.port_offset + index,
                controller_manager_port=KUBE_CONTROLLER_MANAGER_BASE_PORT
                + self.port_offset
                + index,
                scheduler_port=KUBE_SCHEDULER_BASE_PORT + self.port_offset + index,
            )
            for index, name in enumerate(names)
        ]

    @property
    def powerdns_dns_port(self) -> int:
        return POWERDNS_DNS_PORT + self.port_offset

    @property
    def powerdns_api_port(self) -> int:
        return POWERDNS_API_PORT + self.port_offset

    @property
    def bind_dns_port(self) -> int:
        return BIND_DNS_PORT + self.port_offset

    @property
    def coderd_port(self) -> int:
        return CODERD_PORT + self.port_offset

    def fixed_ports(self) -> dict[str, int]:
        """Every port the lab listens on that others rely on, named for error messages."""
        ports = {
            "PowerDNS DNS": self.powerdns_dns_port,
            "PowerDNS API": self.powerdns_api_port,
            "BIND DNS": self.bind_dns_port,
            "Coder API emulator": self.coderd_port,
        }
        for cluster in self.clusters:
            ports[f"kube-apiserver {cluster.name}"] = cluster.apiserver_port
            ports[f"etcd {cluster.name}"] = cluster.etcd_port
            ports[f"etcd peer {cluster.name}"] = cluster.etcd_peer_port
            ports[f"kwok {cluster.name}"] = cluster.kwok_controller_port
            ports[f"kube-controller-manager {cluster.name}"] = cluster.controller_manager_port
            ports[f"kube-scheduler {cluster.name}"] = cluster.scheduler_port
        return ports
