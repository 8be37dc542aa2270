"""The runbook's vocabulary, for change kinds to describe themselves to people on call.

A kind's :meth:`~coder_migrate.engine.change.Change.guide` returns a :class:`Guide`: a title,
the checks to run by hand after its step (command lines built by :class:`Commands` from the
inventory, quoted for the shell), an estimate and what rollback does. The runbook
(:mod:`coder_migrate.runbook`) lays guides out; it never needs to know a kind by name.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coder_migrate.inventory import Primary, Region, Topology

if TYPE_CHECKING:
    from coder_migrate.engine.change import Change

__all__ = ["Check", "Commands", "Guide", "command", "fixed", "path_word"]


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


RegionChecks = Callable[[Commands, Region, Sequence["Change"]], list[Check]]


def _status_checks(c: Commands, region: Region, _: Sequence[Change]) -> list[Check]:
    return [Check(c.cli("migrate", "status"), f"{region.name} is at this step or a later one")]


def _shared_status_checks(c: Commands) -> list[Check]:
    return [Check(c.cli("migrate", "status"), "no region lists this step as next")]


def fixed(text: str) -> Callable[[Topology], str]:
    """An estimate that does not depend on the inventory."""
    return lambda _: text


def _no_estimate(_: Topology) -> str:
    return "no estimate recorded for this kind"


@dataclass(frozen=True)
class Guide:
    """What a runbook says about a step of one kind."""

    title: str
    rollback: str
    """What ``migrate rollback`` does about it."""
    estimate: Callable[[Topology], str] = _no_estimate
    checks: RegionChecks = _status_checks
    """Checks of a region's step, given its changes."""
    shared_title: str = ""
    """Title of the step on the primary's site (the shared names); default: :attr:`title`."""
    shared_checks: Callable[[Commands], list[Check]] = _shared_status_checks
    """Checks of the step on the primary's site, which serves every region."""
