"""Rules of the external provisioners (``coder_provisioners``) and the regional secret store
(``coder_secret_store``): Coder v2 only, and tags that tell the regions apart (``status``
attributes each connected daemon to the region whose tags it presents).
"""

from __future__ import annotations

from collections.abc import Iterator

from coder_migrate.inventory.model import Topology
from coder_migrate.inventory.rules import Finding

__all__ = ["provisioner_findings"]


def provisioner_findings(topology: Topology) -> list[Finding]:
    return [*_v2_only(topology), *_tags_tell_regions_apart(topology),
            *_store_with_provisioners(topology)]


def _v2_only(topology: Topology) -> Iterator[Finding]:
    if topology.generation == "v2":
        return
    for region in topology.regions:
        if region.provisioners is not None:
            yield Finding(
                region.name, "coder_provisioners",
                "no coder_provisioners with coder_generation v1 (external provisioner daemons "
                "with a pre-shared key are Coder v2's)", "coder_provisioners set",
            )


def _tags_tell_regions_apart(topology: Topology) -> Iterator[Finding]:
    seen: dict[tuple[tuple[str, str], ...], str] = {}
    for region in topology.regions:
        if region.provisioners is None:
            continue
        tags = tuple(sorted(region.provisioners.tags.items()))
        first = seen.setdefault(tags, region.name)
        if first != region.name:
            shown = ", ".join(f"{k}={v}" for k, v in tags) or "no tags"
            yield Finding(
                region.name, "coder_provisioners.tags",
                f"tags no other region's provisioners have ({first} has the same: {shown}); "
                "e.g. {region: " + region.name + "}", shown,
            )


def _store_with_provisioners(topology: Topology) -> Iterator[Finding]:
    for region in topology.regions:
        if region.secret_store.external and region.provisioners is None:
            yield Finding(
                region.name, "coder_secret_store",
                "coder_secret_store only where coder_provisioners is set (it holds the "
                "provisioners' pre-shared key)", "kind external without coder_provisioners",
            )
