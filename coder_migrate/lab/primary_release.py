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

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coder_migrate.lab.pod_spec import primary_version, release_name

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

    def tell_emulator(self, version: str) -> str:
        """Ask the emulator to play *version*; return "" or the reason it did not."""
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            return f"cannot read the emulator's admin token: {error.strerror}"
        request = urllib.request.Request(  # noqa: S310 - the lab's own http:// emulator
            f"{self.coderd_url.rstrip('/')}/emulator/release",
            data=json.dumps({"version": version}).encode(),
            method="PUT",
            headers={"Session-Token": token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=EMULATOR_TIMEOUT_SECONDS):  # noqa: S310
                return ""
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")[:200]
            return f"the emulator refused version {version}: {error.code} {body}"
        except (urllib.error.URLError, OSError) as error:
            return f"the emulator did not answer: {error}"

    def follow(self, deployments: list[dict[str, Any]]) -> str:
        """One tick: the release's version to the emulator. Returns "" or the problem."""
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
