"""Helm adapter: pyhelm3 over the helm binary, one client per (kubeconfig, context).

Which helm: ``CODER_MIGRATE_HELM`` when set, else ``helm`` on ``PATH``, else the helm the
lab built (``coder-migrate lab build``). pyhelm3's errors carry helm's stderr; they are
translated here, once, into :class:`HelmError` with the release, the verb and helm's first
line of complaint (redacted), never the values sent.

Reads do not start helm: with helm's default storage driver (``secret``) a release is a Secret
``sh.helm.release.v1.<name>.v<revision>`` labelled ``owner=helm,name=<name>``, its ``release``
key the release as gzip-compressed JSON, base64-encoded (helm's ``pkg/storage/driver``). One
kube list per release replaces ``helm list`` plus ``helm get values`` (two processes), which
dominated a plan of many regions. With another ``HELM_DRIVER`` reads go through helm.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pyhelm3 import Command
from pyhelm3 import errors as helm_errors

from coder_migrate.errors import HelmError, redact
from coder_migrate.inventory import ChartRef
from coder_migrate.providers.kube import KubeCluster

__all__ = [
    "ChartSource",
    "HelmClient",
    "ReleaseState",
    "chart_source",
    "helm_executable",
    "latest_release",
    "release_from_record",
]

T = TypeVar("T")

HELM_ENV = "CODER_MIGRATE_HELM"
DEFAULT_TIMEOUT = "5m"
PENDING_STATES = frozenset({"pending-install", "pending-upgrade", "pending-rollback"})
SECRET_DRIVERS = frozenset({"", "secret", "secrets"})
GZIP_MAGIC = b"\x1f\x8b\x08"


def helm_executable() -> str:
    """The helm binary to run (see the module docstring for the order)."""
    configured = os.environ.get(HELM_ENV)
    if configured:
        return configured
    found = shutil.which("helm")
    if found:
        return found
    from coder_migrate.lab.tools import helm_binary  # the lab is optional at run time

    lab_helm = helm_binary()
    if lab_helm.is_file():
        return str(lab_helm)
    raise HelmError(
        f"helm not found: set {HELM_ENV}, put helm on PATH, or run `coder-migrate lab build`"
    )


@dataclass(frozen=True)
class ChartSource:
    """Where helm takes a chart from: a reference plus ``--repo`` / ``--version``."""

    ref: str
    version: str
    repo: str | None = None
    name: str = ""
    """The chart's own name (Chart.yaml ``name``), which ``helm list`` reports."""

    def describe(self) -> str:
        return f"{self.ref}@{self.version}" + (f" from {self.repo}" if self.repo else "")


def chart_source(chart: ChartRef, base: Path | None) -> ChartSource:
    """A :class:`ChartSource` for an inventory chart; local paths are taken from *base*."""
    if chart.repo.startswith(("http://", "https://")):
        return ChartSource(ref=chart.name, version=chart.version, repo=chart.repo,
                           name=chart.name)
    if chart.repo.startswith("oci://"):
        return ChartSource(ref=f"{chart.repo.rstrip('/')}/{chart.name}", version=chart.version,
                           name=chart.name)
    directory = Path(chart.repo).expanduser()
    if base is not None and not directory.is_absolute():
        directory = base / directory
    path = (directory / chart.name).resolve()
    metadata = _chart_metadata(path)
    return ChartSource(ref=str(path), version=chart.version,
                       name=str(metadata.get("name") or chart.name))


def _chart_metadata(path: Path) -> dict[str, Any]:
    try:
        metadata = yaml.safe_load((path / "Chart.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def local_chart_version(source: ChartSource) -> str | None:
    """The version in a local chart's Chart.yaml (``None`` for remote charts)."""
    if source.repo is not None or source.ref.startswith("oci://"):
        return None
    version = _chart_metadata(Path(source.ref)).get("version")
    return str(version) if version is not None else None


@dataclass(frozen=True)
class ReleaseState:
    """A release as helm reports it, with the values the user supplied."""

    name: str
    namespace: str
    chart: str
    """``<chart name>-<chart version>``, as ``helm list`` prints it."""
    status: str
    revision: int
    app_version: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def chart_version(self) -> str:
        return self.chart.rsplit("-", 1)[-1] if "-" in self.chart else ""

    @property
    def chart_name(self) -> str:
        return self.chart.rsplit("-", 1)[0] if "-" in self.chart else self.chart

    @property
    def pending(self) -> bool:
        return self.status in PENDING_STATES


def release_from_record(item: Mapping[str, Any]) -> ReleaseState | None:
    """The release one helm storage Secret holds (``None`` when it is not readable)."""
    encoded = (item.get("data") or {}).get("release")
    if not isinstance(encoded, str):
        return None
    try:
        payload = base64.b64decode(base64.b64decode(encoded))
        if payload.startswith(GZIP_MAGIC):
            payload = gzip.decompress(payload)
        record = json.loads(payload)
    except (ValueError, OSError, EOFError):
        return None
    if not isinstance(record, dict):
        return None
    metadata = (record.get("chart") or {}).get("metadata") or {}
    chart = f"{metadata.get('name', '')}-{metadata.get('version', '')}" if metadata else ""
    return ReleaseState(
        name=str(record.get("name", "")),
        namespace=str(record.get("namespace", "")),
        chart=chart,
        status=str((record.get("info") or {}).get("status", "")),
        revision=int(record.get("version", 0) or 0),
        app_version=str(metadata.get("appVersion", "") or ""),
        values=dict(record.get("config") or {}),
    )


def latest_release(items: list[dict[str, Any]]) -> ReleaseState | None:
    """The newest revision among a release's storage Secrets, as ``helm list --all`` shows
    it; ``None`` when there is none or it was uninstalled with ``--keep-history``."""

    def revision(item: Mapping[str, Any]) -> int:
        labels = (item.get("metadata") or {}).get("labels") or {}
        try:
            return int(labels.get("version", 0))
        except (TypeError, ValueError):
            return 0

    if not items:
        return None
    state = release_from_record(max(items, key=revision))
    if state is None or state.status == "uninstalled":
        return None
    return state


class HelmClient:
    """Releases of one cluster: writes through helm, reads from helm's storage via *storage*
    (the cluster's kube client) when helm keeps releases in Secrets."""

    def __init__(
        self,
        context: str,
        kubeconfig: str | None = None,
        *,
        executable: str | None = None,
        timeout: str = DEFAULT_TIMEOUT,
        slots: int = 0,
        storage: KubeCluster | None = None,
    ) -> None:
        self.context = context
        self.kubeconfig = kubeconfig
        self._slots_size = slots
        self._slots: asyncio.Semaphore | None = None
        self._storage = storage if os.environ.get("HELM_DRIVER", "") in SECRET_DRIVERS else None
        self._executable = executable
        self._timeout = timeout
        self._command_instance: Command | None = None

    @property
    def _command(self) -> Command:
        # Created on first use: a plan that only reads never needs the helm binary.
        if self._command_instance is None:
            self._command_instance = Command(
                executable=self._executable or helm_executable(),
                kubeconfig=Path(self.kubeconfig) if self.kubeconfig else None,
                kubecontext=self.context,
                default_timeout=self._timeout,
            )
        return self._command_instance

    async def _run(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        if self._slots_size and self._slots is None:
            self._slots = asyncio.Semaphore(self._slots_size)
        try:
            if self._slots is None:
                return await action()
            async with self._slots:
                return await action()
        except helm_errors.Error as error:
            raise HelmError(f"{self.context}: {what}: {_complaint(error)}") from None
        except (OSError, ValueError) as error:
            raise HelmError(f"{self.context}: {what}: {type(error).__name__}") from None

    async def release(self, namespace: str, name: str) -> ReleaseState | None:
        """The release in any state but uninstalled, with its user-supplied values, or
        ``None``."""
        if self._storage is not None:
            items = await self._storage.secrets_data(namespace, f"owner=helm,name={name}")
            return latest_release(items)

        async def read() -> ReleaseState | None:
            rows = await self._command.list(namespace=namespace, all=True)
            row = next((r for r in rows if r.get("name") == name), None)
            if row is None:
                return None
            values = await self._command.get_values(name, namespace=namespace)
            return ReleaseState(
                name=name,
                namespace=namespace,
                chart=str(row.get("chart", "")),
                status=str(row.get("status", "")),
                revision=int(row.get("revision", 0) or 0),
                app_version=str(row.get("app_version", "")),
                values=dict(values or {}),
            )

        return await self._run(f"read release {namespace}/{name}", read)

    async def install(
        self,
        namespace: str,
        name: str,
        chart: ChartSource,
        values: Mapping[str, Any],
        *,
        wait: bool = True,
        timeout: str | None = None,
        description: str = "",
    ) -> None:
        """``helm upgrade --install`` with the complete values (no reuse of old values)."""

        async def install() -> None:
            await self._command.install_or_upgrade(
                name,
                chart.ref,
                dict(values),
                namespace=namespace,
                repo=chart.repo,
                version=chart.version,
                create_namespace=False,
                reset_values=True,
                wait=wait,
                timeout=timeout,
                description=description or None,
            )

        await self._run(f"install release {namespace}/{name} ({chart.describe()})", install)

    async def uninstall(self, namespace: str, name: str, *, wait: bool = True) -> bool:
        """Remove the release; ``False`` when it was not there."""
        if await self.release(namespace, name) is None:
            return False

        async def uninstall() -> None:
            await self._command.uninstall(name, namespace=namespace, wait=wait)

        await self._run(f"uninstall release {namespace}/{name}", uninstall)
        return True

    async def recover(self, namespace: str, name: str) -> None:
        """Unstick a release an interrupted helm run left ``pending-*``.

        A pending first install is removed (it never served); a pending upgrade or rollback
        is rolled back to its last good revision. Either way the next install can run.
        """
        state = await self.release(namespace, name)
        if state is None or not state.pending:
            return
        if state.status == "pending-install":
            await self._run(
                f"remove interrupted install {namespace}/{name}",
                lambda: self._command.uninstall(name, namespace=namespace, wait=True),
            )
            return
        await self._run(
            f"roll back interrupted upgrade {namespace}/{name}",
            lambda: self._command.rollback(name, None, namespace=namespace, wait=True),
        )


def _complaint(error: helm_errors.Error) -> str:
    stderr = getattr(error, "stderr", b"")
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else str(stderr)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = next((line for line in lines if line.lower().startswith("error")), None)
    message = first or (lines[0] if lines else type(error).__name__)
    return redact(message.removeprefix("Error: ").removeprefix("error: "))
