"""Redaction keeps credentials out of messages but leaves paths and names readable."""

from __future__ import annotations

import pytest

from coder_migrate.errors import CoderAPIError, ConfigError, redact

PROXY_TOKEN = "0b6a5f0e-3c0b-4a7e-9d43-5c1f2b7a9e10:" + "ab12" * 16
SESSION_TOKEN = "Xk9fQ2mZ7rT4vB1nL8sD3hJ6wP0yC5gA"


@pytest.mark.parametrize(
    "text",
    [
        f"token {PROXY_TOKEN}",
        f"api_key={SESSION_TOKEN}",
        f"failed with {SESSION_TOKEN} in it",
        "secret: 0123456789abcdef0123456789abcdef0123",
    ],
)
def test_credentials_are_redacted(text: str) -> None:
    assert PROXY_TOKEN not in redact(text)
    assert SESSION_TOKEN not in redact(text)
    assert "0123456789abcdef0123456789abcdef" not in redact(text)
    assert "(sensitive)" in redact(text)


def test_long_paths_stay_readable() -> None:
    path = "/tmp/pytest-of-root/pytest-12/test_each_rule_gives_one_line_naming_file0/a.yaml"
    assert redact(f"{path}: coder_dns: bad") == f"{path}: coder_dns: bad"
    assert str(ConfigError(f"{path}: bad")) == f"{path}: bad"


def test_api_errors_carry_method_and_path_not_tokens() -> None:
    error = CoderAPIError(f"refused {SESSION_TOKEN}", method="GET", path="/api", status=401)
    assert str(error) == "GET /api (401): refused (sensitive)"
