"""Test-suite wiring: fixture modules are plugins so each area keeps its own fixtures."""

import os

from hypothesis import settings

# CI replays the same examples on every run, so a landing is never decided by chance; local
# runs keep exploring new ones (and hypothesis' database replays what they found).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

pytest_plugins: list[str] = [
    # Each area adds its fixture module here, e.g. "tests.fixtures.lab".
    "tests.fixtures.coderd",
    "tests.fixtures.dns",
    "tests.fixtures.lab",
    "tests.fixtures.proxy",
    "tests.fixtures.scripted",
    # Fails any test whose captured output shows a planted or resolved secret.
    "tests.secret_scan",
    "pytester",
]
