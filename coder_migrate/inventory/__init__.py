"""The inventory: one source of truth, read through ``ansible-inventory --list``."""

from coder_migrate.inventory.loader import (
    PRIMARY_GROUP,
    REGIONS_GROUP,
    load_topology,
    read_inventory_json,
    topology_from_inventory_json,
)
from coder_migrate.inventory.model import (
    ChartRef,
    DnsSettings,
    Geo,
    Primary,
    Region,
    SecretRef,
    TestWorkspace,
    TlsSecrets,
    Topology,
    WorkspaceProvider,
)

__all__ = [
    "PRIMARY_GROUP",
    "REGIONS_GROUP",
    "ChartRef",
    "DnsSettings",
    "Geo",
    "Primary",
    "Region",
    "SecretRef",
    "TestWorkspace",
    "TlsSecrets",
    "Topology",
    "WorkspaceProvider",
    "load_topology",
    "read_inventory_json",
    "topology_from_inventory_json",
]
