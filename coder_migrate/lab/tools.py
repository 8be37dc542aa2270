"""The lab's tools for the rest of the project: the helm binary, the environment every helm
call needs (so helm finds the helm-diff plugin), and the stand-in charts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Literal

from coder_migrate.lab.build import LabBinaries
from coder_migrate.lab.paths import CacheLayout

CHARTS_DIR: Final = Path(__file__).parent / "charts"

StandInChart = Literal[
    "coder-v1", "coder-v1.20", "workspace-provider", "coder-v2", "coder-provisioner"
]


def helm_binary(cache: CacheLayout | None = None) -> Path:
    """The helm the lab built (``lab build``)."""
    return LabBinaries.from_cache(cache or CacheLayout.default()).helm


def helm_environment(cache: CacheLayout | None = None) -> dict[str, str]:
    """Variables to add to the environment of every helm call the project makes.

    Only the plugin and data locations are set (helm-diff lives there); helm keeps the
    user's config and cache directories.
    """
    binaries = LabBinaries.from_cache(cache or CacheLayout.default())
    return {
        "HELM_DATA_HOME": str(binaries.helm_data_home),
        "HELM_PLUGINS": str(binaries.helm_plugins),
    }


def helm_process_environment(cache: CacheLayout | None = None) -> dict[str, str]:
    """The current environment plus :func:`helm_environment`, for ``subprocess`` calls."""
    return {**os.environ, **helm_environment(cache)}


def chart_path(name: StandInChart) -> Path:
    """Directory of a stand-in chart (see ``coder_migrate/lab/charts/README.md``)."""
    return CHARTS_DIR / name
