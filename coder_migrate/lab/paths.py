"""Where the lab keeps its build cache and its running state."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "CODER_MIGRATE_CACHE"
STATE_ENV = "CODER_MIGRATE_LAB_STATE"


@dataclass(frozen=True)
class CacheLayout:
    """``<root>/lab/<component>-<version>/`` binaries, ``logs/`` and ``work/`` wrapper modules."""

    root: Path

    @classmethod
    def default(cls, root: Path | None = None) -> CacheLayout:
        if root is not None:
            return cls(root.expanduser().resolve())
        if os.environ.get(CACHE_ENV):
            return cls(Path(os.environ[CACHE_ENV]).expanduser().resolve())
        return cls(Path.home() / ".cache" / "coder-migrate")

    @property
    def lab(self) -> Path:
        return self.root / "lab"

    @property
    def logs(self) -> Path:
        return self.lab / "logs"

    @property
    def work(self) -> Path:
        return self.lab / "work"

    def component_dir(self, key: str) -> Path:
        return self.lab / key


def source_checkout() -> Path | None:
    """The repository this package runs from (an editable install), if any."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "coder-migrate"' in pyproject.read_text():
        return root
    return None


@dataclass(frozen=True)
class StateLayout:
    """The running lab's files (see docs/lab.md)::

    <state>/lab.json              what runs: settings, PIDs (with start times), endpoints
    <state>/kubeconfig            one kubeconfig, contexts lab-primary and lab-<region>
    <state>/secrets/              0700; one 0600 file per secret: pdns-api-key,
                                  tsig-secret, coder-token (written by the emulator)
    <state>/kwok/                 kwokctl's workdir (kwok.yaml, clusters/<name>/...)
    <state>/pdns/ bind/ coderd/   config and data per service
    <state>/logs/                 output of each process
    <state>/pods.json             the region pods the lab runs (PIDs, listen addresses)
    <state>/logs/pods/            output of each region pod, one file per release

    The default is ``<checkout>/.lab`` when running from a source checkout (the lab
    inventory refers to its secret files there), else ``~/.local/state/coder-migrate/lab``.
    """

    root: Path

    @classmethod
    def default(cls, root: Path | None = None) -> StateLayout:
        if root is not None:
            return cls(root.expanduser().resolve())
        if os.environ.get(STATE_ENV):
            return cls(Path(os.environ[STATE_ENV]).expanduser().resolve())
        checkout = source_checkout()
        if checkout is not None:
            # inventories/lab/ names the lab's secret files relative to the checkout.
            return cls(checkout / ".lab")
        return cls(Path.home() / ".local" / "state" / "coder-migrate" / "lab")

    @property
    def manifest(self) -> Path:
        return self.root / "lab.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def pdns_api_key(self) -> Path:
        return self.secrets / "pdns-api-key"

    @property
    def tsig_secret(self) -> Path:
        return self.secrets / "tsig-secret"

    @property
    def coder_token(self) -> Path:
        return self.secrets / "coder-token"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def kwok_workdir(self) -> Path:
        return self.root / "kwok"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pods_state(self) -> Path:
        return self.root / "pods.json"

    @property
    def pod_logs(self) -> Path:
        return self.logs / "pods"

    def service_dir(self, name: str) -> Path:
        return self.root / name
