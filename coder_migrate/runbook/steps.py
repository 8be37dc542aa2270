"""What people on call need per change kind: checks, expected output, duration, rollback.

A step is a run of consecutive changes of one kind in a region's plan. Kinds without a guide
here (a kind added to the planner later) get a generic one, so a new kind never breaks a
runbook; it only reads less specifically until a guide is added.

Durations are estimates from the lab (kwok clusters, the Coder emulator, PowerDNS on
loopback); production adds image pulls, workspace build times and DNS TTLs. The one measured
number is helm's (docs/benchmarks.md: median 2.35 s for ``helm upgrade --install --wait``).
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from coder_migrate.dns.plan import KIND as KIND_DNS
from coder_migrate.engine.deploy import KIND_NAMESPACE, KIND_RELEASE, KIND_SATELLITE
from coder_migrate.engine.plan import Change
from coder_migrate.inventory import Primary, Region, Topology
from coder_migrate.migrations.v1_20_to_v1_21 import (
    DNS_CHECK_WAIT,
    KIND_DNS_CHECK,
    KIND_NETWORKING_V2,
    KIND_REBUILD,
    KIND_RETAIN,
    REBUILD_TIMEOUT,
    RETAINED_CONFIG_MAP,
)
from coder_migrate.providers.coder.health import health_url

__all__ = ["Check", "Commands", "Step", "command", "path_word", "steps_of"]

def command(*words: str) -> str:
    """A shell command line, each word quoted where the shell needs it."""
    return " ".join(shlex.quote(w) for w in words)


def path_word(path: str) -> str:
    """A path as one shell word whose leading ``~`` or ``~user`` the shell still expands
    (kubectl and helm do not expand it themselves)."""
    if path.startswith("~"):
        home, slash, rest = path.partition("/")
        user = home[1:]
        if not user or shlex.quote(user) == user:
            return home + slash + (shlex.quote(rest) if rest else "")
    return shlex.quote(path)


@dataclass(frozen=True)
class Commands:
    """The command lines of one site, built once from the inventory."""

    inventory: str
    """The inventory directory exactly as the user gave it (no absolute path is made)."""
    topology: Topology

    def cli(self, *words: str, limit: str | None = None) -> str:
        tail = ("--limit", limit) if limit is not None else ()
        return command("coder-migrate", *words, "-i", self.inventory, *tail)

    def _kubeconfig(self, site: Primary | Region) -> str:
        """`` --kubeconfig PATH`` (the path relative to the inventory, ``~`` left to the
        shell), or nothing."""
        if site.kubeconfig is None:
            return ""
        path = site.kubeconfig
        if not posixpath.isabs(path) and not path.startswith("~"):
            path = posixpath.join(self.inventory, path)
        return f" --kubeconfig {path_word(path)}"

    def kubectl(self, site: Primary | Region, *words: str, namespace: str | None = None) -> str:
        where = ("-n", namespace) if namespace is not None else ()
        return (command("kubectl") + self._kubeconfig(site) + " "
                + command("--context", site.kube_context, *where, *words))

    def helm_status(self, site: Primary | Region, release: str, namespace: str) -> str:
        return command("helm", "status", release, "-n", namespace, "--kube-context",
                       site.kube_context) + self._kubeconfig(site)


@dataclass(frozen=True)
class Check:
    command: str
    """A command line to run, or a place to look when ``manual``."""
    expect: str
    manual: bool = False


@dataclass(frozen=True)
class Step:
    number: int
    kind: str
    title: str
    changes: tuple[Change, ...]
    checks: tuple[Check, ...]
    estimate: str
    rollback: str


@dataclass(frozen=True)
class _Guide:
    title: str
    checks: Callable[[Commands, Region, Sequence[Change]], list[Check]]
    """Checks for a region; the primary's site (shared DNS) gets :func:`_site_checks`."""
    estimate: Callable[[Topology], str]
    rollback: str


def _namespace_checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    return [Check(c.kubectl(region, "get", "namespace", region.namespace),
                  f"namespace {region.namespace} with STATUS Active")]


def _release_checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    return [
        Check(c.helm_status(region, region.release, region.namespace), "STATUS: deployed"),
        Check(c.kubectl(region, "get", "pods", namespace=region.namespace),
              "every pod Running with all containers READY (e.g. 1/1)"),
    ]


def _satellite_checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    base = region.access_url.rstrip("/")
    return [
        Check(c.cli("status", limit=region.name),
              f"exit 0; the {region.name} row shows the release deployed, its pods ready, "
              "the satellite registered and reachable yes"),
        Check(command("curl", "-fsS", health_url(base, "v1")), "HTTP 200 from the satellite"),
    ]


def _networking_checks(c: Commands, region: Region, changes: Sequence[Change]) -> list[Check]:
    names = ", ".join(str((ch.after or {}).get("provider", ch.target)) for ch in changes)
    return [
        Check("the primary's dashboard: Manage > Providers",
              f"Networking v2 is enabled for {names}", manual=True),
        Check(c.cli("migrate", "status"),
              f"{region.name} is at {KIND_NETWORKING_V2} or a later step"),
    ]


def _rebuild_checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    test = region.test_workspace
    what = f"workspace {test.name} of {test.owner}" if test else "the test workspace"
    return [
        Check("the primary's dashboard: Workspaces",
              f"{what}: latest build done, workspace ON", manual=True),
        Check(c.cli("migrate", "status"), f"{region.name} is at {KIND_REBUILD} or a later step"),
    ]


def _dns_checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    return [Check(c.cli("dns", "check", limit=region.name),
                  f"exit 0; every row for {region.name} ok (answers are the satellite's "
                  f"addresses: {', '.join(region.dns_targets) or 'none listed'})")]


def _site_checks(c: Commands, kind: str) -> list[Check]:
    """Checks of the primary's site: the shared names, which serve every region."""
    if kind in (KIND_DNS, KIND_DNS_CHECK):
        return [Check(c.cli("dns", "check"),
                      "exit 0; every row ok: each region's test clients get that region's "
                      "answers for the shared name")]
    return [Check(c.cli("migrate", "status"), "no region lists this step as next")]


def _retain_checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    primary = c.topology.primary
    checks = [
        Check(c.helm_status(region, p.release, p.namespace), "STATUS: deployed (never uninstalled)")
        for p in region.workspace_providers
    ]
    checks.append(Check(
        c.kubectl(primary, "get", "configmap", RETAINED_CONFIG_MAP, "-o",
                  "jsonpath={.data.retained\\.json}", namespace=primary.namespace),
        "JSON with the keys " + ", ".join(
            f"{region.name}/{p.namespace}/{p.release}" for p in region.workspace_providers),
    ))
    return checks


def _fixed(text: str) -> Callable[[Topology], str]:
    return lambda _: text


_GUIDES: dict[str, _Guide] = {
    KIND_NAMESPACE: _Guide(
        "Create the satellite's namespace", _namespace_checks,
        _fixed("about 1 s (one API call)"),
        "`migrate rollback` leaves the namespace in place (empty once the satellite is "
        "uninstalled); nothing else runs in it.",
    ),
    KIND_RELEASE: _Guide(
        "Install the satellite (helm upgrade --install --wait)", _release_checks,
        _fixed("about 2.5 s in the lab (median 2.35 s, docs/benchmarks.md); in production "
               "add the image pull and pod start. The health gate after the wave waits up to "
               "--gate-timeout (120 s by default)"),
        "`migrate rollback` uninstalls the satellite's release; the old workspace-provider "
        "release is never touched.",
    ),
    KIND_SATELLITE: _Guide(
        "Register the satellite with the primary", _satellite_checks,
        _fixed("about 1 s: fetch the satellite's key, check its fingerprint, register it"),
        "`migrate rollback` deregisters the satellite from the primary (before uninstalling "
        "it).",
    ),
    KIND_NETWORKING_V2: _Guide(
        "Switch on Networking v2 for the region's workspace providers", _networking_checks,
        _fixed("about 1 s per provider (one API call each)"),
        "`migrate rollback` switches Networking v2 off again for these providers.",
    ),
    KIND_REBUILD: _Guide(
        "Rebuild the test workspace and reach it through the satellite", _rebuild_checks,
        _fixed("seconds in the lab (the emulator builds at once); in production as long as "
               f"the workspace's build, at most {REBUILD_TIMEOUT:.0f} s before apply stops. "
               "A failed rebuild stops the wave; the other regions are untouched"),
        "Nothing to undo: rollback does not rebuild the workspace.",
    ),
    KIND_DNS: _Guide(
        "Point the region's DNS records at the satellite", _dns_checks,
        lambda t: ("about 1 s for the DNS API calls; resolvers that cached the old answers "
                   f"see the new ones after the TTL ({t.dns.ttl} s)"),
        "`migrate rollback` restores each rrset as the plan observed it before the change "
        "(records that did not exist are deleted).",
    ),
    KIND_DNS_CHECK: _Guide(
        "Check the region's DNS answers", _dns_checks,
        _fixed("a few seconds; waits up to "
               f"{DNS_CHECK_WAIT:.0f} s for PowerDNS health checks to settle"),
        "Nothing to undo: it only asks the authoritative servers.",
    ),
    KIND_RETAIN: _Guide(
        "Keep the old workspace-provider release for rollback", _retain_checks,
        _fixed("about 1 s"),
        "Nothing to undo: the old release was never changed; rollback relies on it.",
    ),
}


_SITE_TITLES = {
    KIND_DNS: "Point the shared and primary names at the regions (GeoDNS)",
    KIND_DNS_CHECK: "Check every region's DNS answers, the shared name included",
}
"""Titles of the primary's site steps, which serve every region."""


def _generic_checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    return [Check(c.cli("migrate", "status"),
                  f"{region.name} is at this step or a later one")]


def _guide(kind: str) -> _Guide:
    return _GUIDES.get(kind) or _Guide(
        f"{kind} changes", _generic_checks, _fixed("no estimate recorded for this kind"),
        "`migrate rollback` undoes what the journal recorded for these changes, if they can "
        "be undone.",
    )


def steps_of(
    commands: Commands, site: Primary | Region, changes: Sequence[Change]
) -> list[Step]:
    """The region's changes as steps: consecutive changes of one kind form one step."""
    runs: list[list[Change]] = []
    for change in changes:
        if runs and runs[-1][0].kind == change.kind:
            runs[-1].append(change)
        else:
            runs.append([change])
    steps = []
    for number, run in enumerate(runs, start=1):
        guide = _guide(run[0].kind)
        title = guide.title if isinstance(site, Region) else _SITE_TITLES.get(
            run[0].kind, guide.title)
        steps.append(Step(
            number=number, kind=run[0].kind, title=title, changes=tuple(run),
            checks=tuple(guide.checks(commands, site, run) if isinstance(site, Region)
                         else _site_checks(commands, run[0].kind)),
            estimate=guide.estimate(commands.topology), rollback=guide.rollback,
        ))
    return steps
