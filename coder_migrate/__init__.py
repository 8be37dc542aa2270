"""coder-migrate: deploy and migrate multi-region Coder deployments."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("coder-migrate")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
