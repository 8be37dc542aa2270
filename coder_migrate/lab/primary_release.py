"""The lab's primary follows its chart release: the Coder emulator answers as the Coder
version of the primary release deployed in the lab's primary cluster (docs/lab.md "The
primary follows its release").

The release is the one the lab's world names (``coder_migrate/lab/world.yml``: release
``coder`` in namespace ``coder``, what ``inventories/lab`` deploys). Its version is the image
tag of its ``coderd run`` / ``server`` container. The pods supervisor calls :meth:`follow`
every tick; the emulator's ``PUT /emulator/release`` restarts it in the new mode on the same
state when the version changed (a pod restart), and does nothing when it did not, so a
restarted emulator is brought back to the release's version on the next tick. Without the
release (not installed yet, or uninstalled) the emulator keeps what it plays.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coder_migrate.lab.pod_spec import PRIMARY_MODE, container_mode, primary_version, release_name

__all__ = ["PrimaryRelease"]

EMULATOR_TIMEOUT_SECONDS = 2.0


@dataclass
class PrimaryRelease:
    """Where the lab's primary release is, and how to tell the emulator its version."""

    context: str
    namespace: str
    release: str
    coderd_url: str
    token_file: Path
    #: The version the emulator last accepted (None before the release is seen).
    version: str | None = None
    #: Why the last attempt failed, "" when it did not.
    error: str = ""
    #: sha256 of the provisioner PSK last told to the emulator, and when.
    psk_told: tuple[str, float] = ("", 0.0)
    #: Whether the emulator plays the release's version (v1); a v2 primary keeps the version
    #: it was started with and follows only the provisioner key its pod reads.
    follow_version: bool = True

    @property
    def name(self) -> str:
        return f"{self.context}/{self.namespace}/{self.release}"

    def deployed_version(self, deployments: list[dict[str, Any]]) -> str | None:
        """The version of the release's primary Deployment among *deployments*."""
        for deployment in deployments:
            metadata = deployment.get("metadata") or {}
            if metadata.get("namespace") == self.namespace and (
                release_name(metadata) == self.release
            ):
                version = primary_version(deployment)
                if version is not None:
                    return version
        return None

    def psk_reference(self, deployments: list[dict[str, Any]]) -> tuple[str, str] | None:
        """(Secret, key) the primary's ``CODER_PROVISIONER_DAEMON_PSK`` reads, or None."""
        for deployment in deployments:
            metadata = deployment.get("metadata") or {}
            if metadata.get("namespace") != self.namespace or (
                release_name(metadata) != self.release
            ):
                continue
            spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
            for container in spec.get("containers") or []:
                if container_mode(container) != PRIMARY_MODE:
                    continue
                for entry in container.get("env") or []:
                    reference = ((entry.get("valueFrom") or {}).get("secretKeyRef") or {})
                    if entry.get("name") == "CODER_PROVISIONER_DAEMON_PSK" and reference:
                        return str(reference.get("name", "")), str(reference.get("key", ""))
        return None

    def tell_psk(self, psk: str, *, every: float = 15.0) -> str:
        """Tell the emulator the primary's PSK ("" for none) when it changed, and every
        *every* seconds (a restarted emulator learns it again); "" or the problem."""
        digest = hashlib.sha256(psk.encode()).hexdigest()
        told, when = self.psk_told
        if digest == told and time.monotonic() - when < every:
            return ""
        problem = self._put("/emulator/provisioner-psk", {"psk": psk}, "the provisioner key")
        if not problem:
            self.psk_told = (digest, time.monotonic())
        return problem

    def tell_emulator(self, version: str) -> str:
        """Ask the emulator to play *version*; return "" or the reason it did not."""
        return self._put("/emulator/release", {"version": version}, f"version {version}")

    def _put(self, path: str, body: dict[str, str], what: str) -> str:
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            return f"cannot read the emulator's admin token: {error.strerror}"
        request = urllib.request.Request(  # noqa: S310 - the lab's own http:// emulator
            f"{self.coderd_url.rstrip('/')}{path}",
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"Session-Token": token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=EMULATOR_TIMEOUT_SECONDS):  # noqa: S310
                return ""
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")[:200]
            return f"the emulator refused {what}: {error.code} {text}"
        except (urllib.error.URLError, OSError) as error:
            return f"the emulator did not answer: {error}"

    def follow(self, deployments: list[dict[str, Any]]) -> str:
        """One tick: the release's version to the emulator. Returns "" or the problem."""
        if not self.follow_version:
            return ""
        version = self.deployed_version(deployments)
        if version is None:
            self.error = ""
            return ""
        self.error = self.tell_emulator(version)
        if not self.error:
            self.version = version
        return self.error

    def record(self) -> dict[str, str | None]:
        return {"release": self.name, "version": self.version, "error": self.error}
