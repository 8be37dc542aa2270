"""Test-suite wiring: fixture modules are plugins so each area keeps its own fixtures."""

pytest_plugins: list[str] = [
    # Each area adds its fixture module here, e.g. "tests.fixtures.lab".
    "tests.fixtures.coderd",
    "tests.fixtures.dns",
    "tests.fixtures.lab",
    "tests.fixtures.proxy",
]
