"""Rules that hand-written inventories break: two sites in one place (a DNS name, a Helm
release, a namespace another region's workspaces use), a version the generation cannot run,
a secret file others can read. Each is a function of its own; the loader checks them with
the rules of :mod:`coder_migrate.inventory.rules`, after each host's values have their types.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from coder_migrate.inventory.model import Primary, Region, SecretRef, Topology
from coder_migrate.inventory.rules import Finding

__all__ = ["site_findings"]

# What each generation's migration and charts are written for (seeds 000-004).
_VERSIONS = {
    "v1": (re.compile(r"^1\.21\.\d+([-+].*)?$"),
           "a Coder 1.21.x version for coder_generation v1 (the satellite migration needs "
           "1.21; 1.20 and older have no satellites)"),
    "v2": (re.compile(r"^2\.\d+\.\d+([-+].*)?$"),
           "a Coder 2.x version for coder_generation v2 (workspace proxies)"),
}


def site_findings(topology: Topology) -> list[Finding]:
    return [
        *_one_dns_name_per_site(topology),
        *_one_release_per_place(topology),
        *_satellites_apart_from_other_regions_workspaces(topology),
        *_version_fits_the_generation(topology),
        *_secret_files_are_private(topology),
        *_secret_files_outside_the_inventory(topology),
    ]


def _sites(topology: Topology) -> list[Primary | Region]:
    return [topology.primary, *topology.regions]


def _one_dns_name_per_site(topology: Topology) -> Iterator[Finding]:
    """Ports do not tell sites apart in DNS: one name is one set of A/AAAA records.
    (Same host and port is the rule on access URLs in rules.py.)"""
    seen: dict[str, Primary | Region] = {}
    for site in _sites(topology):
        name = site.dns_name
        if name is None:
            continue
        first = seen.setdefault(name, site)
        same_url = urlsplit(first.access_url).netloc == urlsplit(site.access_url).netloc
        if first is not site and not same_url:
            key = "coder_hostname" if site.hostname else "coder_access_url"
            yield Finding(
                site.name, key,
                f"a DNS name no other site uses ({first.name} uses {name}; a different port "
                "does not make a different site in DNS)",
                site.hostname or site.access_url,
            )


def _cluster(topology: Topology, site: Primary | Region) -> tuple[str, str]:
    """(kubeconfig file, context): where a site's namespace lives."""
    if site.kubeconfig is None:
        return "", site.kube_context
    path = Path(site.kubeconfig).expanduser()
    if not path.is_absolute():
        path = Path(topology.source) / path
    return str(path.resolve()), site.kube_context


def _one_release_per_place(topology: Topology) -> Iterator[Finding]:
    seen: dict[tuple[str, str, str, str], str] = {}
    for site in _sites(topology):
        place = (*_cluster(topology, site), site.namespace, site.release)
        first = seen.setdefault(place, site.name)
        if first != site.name:
            yield Finding(
                site.name, "coder_kube_context",
                f"a Helm release no other site uses ({first} is release {site.release} in "
                f"namespace {site.namespace} of kube context {site.kube_context} too)",
                site.kube_context,
            )


def _satellites_apart_from_other_regions_workspaces(topology: Topology) -> Iterator[Finding]:
    """Coder requires a satellite in a namespace of its own: not its own provider's (rules.py)
    and not one where another region's provider runs workspaces in the same cluster."""
    for region in topology.regions:
        cluster = _cluster(topology, region)
        for other in topology.regions:
            if other is region or _cluster(topology, other) != cluster:
                continue
            for provider in other.workspace_providers:
                if provider.namespace == region.namespace:
                    yield Finding(
                        region.name, "coder_namespace",
                        f"a namespace other than that of workspace provider {provider.name} "
                        f"of region {other.name} in the same cluster ({region.kube_context}); "
                        "Coder requires the satellite in a separate namespace",
                        region.namespace,
                    )


def _version_fits_the_generation(topology: Topology) -> Iterator[Finding]:
    pattern, expected = _VERSIONS[topology.generation]
    if not pattern.match(topology.version):
        yield Finding("all", "coder_version", expected, repr(topology.version))


def _secret_references(topology: Topology) -> Iterator[tuple[str, str, SecretRef]]:
    """(owner, key, reference) of each secret reference."""
    yield "all", "coder_session_token", topology.session_token
    dns = topology.dns
    if dns.powerdns is not None:
        yield "all", "coder_dns.powerdns.api_key", dns.powerdns.api_key
    if dns.rfc2136 is not None:
        yield "all", "coder_dns.rfc2136.tsig_secret", dns.rfc2136.tsig_secret
    if topology.primary.database is not None:
        yield topology.primary.name, "coder_database.url", topology.primary.database.url


def _secret_files_are_private(topology: Topology) -> Iterator[Finding]:
    """A secret file others can read (or write) is a leaked (or replaceable) secret. A file
    that does not exist yet is not checked: the inventory may be validated before secrets
    are in place."""
    for owner, key, reference in _secret_references(topology):
        path = reference.path(Path(topology.source))
        try:
            mode = stat.S_IMODE(path.stat().st_mode) if path is not None else None
        except OSError:
            continue
        if mode is not None and mode & (stat.S_IROTH | stat.S_IWOTH):
            yield Finding(
                owner, f"{key}.file",
                f"a secret file other users cannot read or write (chmod 600 {reference.file})",
                f"mode {mode:04o}",
            )


def _secret_files_outside_the_inventory(topology: Topology) -> Iterator[Finding]:
    """Ansible reads every file under an inventory directory (but group_vars/ and host_vars/)
    as inventory: a token file there becomes a host named after the token, printed by every
    play."""
    root = Path(topology.source).resolve()
    for owner, key, reference in _secret_references(topology):
        path = reference.path(Path(topology.source))
        if path is not None and path.resolve().is_relative_to(root):
            yield Finding(
                owner, f"{key}.file",
                "a secret file outside the inventory directory (Ansible reads the files in it "
                "as inventory, and would print the secret as a host name)",
                str(reference.file),
            )
