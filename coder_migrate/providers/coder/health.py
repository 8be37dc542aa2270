"""The health path each Coder generation's real server serves: one place for records, gates,
``status``, ``dns check`` and the bundled proxy.

- v1 (``coder/coder`` 1.21.0, enterprise-helm ``templates/coderd.yaml``): the readiness and
  liveness probes of coderd, primary and satellite alike, are ``GET /cem-healthz``; the chart
  names no ``/healthz``.
- v2 (``coder/coder`` ``coderd`` and ``enterprise/wsproxy``): ``GET /healthz`` answers ``OK``
  on the primary and on a workspace proxy.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["HEALTH_PATHS", "health_path", "health_url"]

Generation = Literal["v1", "v2"]

HEALTH_PATHS: Final[dict[str, str]] = {"v1": "/cem-healthz", "v2": "/healthz"}


def health_path(generation: str) -> str:
    """The path a server of *generation* answers 200 on when healthy."""
    return HEALTH_PATHS[generation]


def health_url(access_url: str, generation: str) -> str:
    """*access_url* (no path) joined with the generation's health path."""
    return access_url.rstrip("/") + health_path(generation)
