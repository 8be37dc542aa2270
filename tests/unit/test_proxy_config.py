"""Proxy settings: names from Coder's docs, precedence, and one clear line per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from coder_migrate.errors import ConfigError
from coder_migrate.proxy.config import load_settings, parse_env_file

TOKEN = "2fb6500b-bb47-4783-a0db-dedde895b865:" + "0" * 63 + "5"
BASE = {"CODER_PRIMARY_ACCESS_URL": "https://coder.example.com", "CODER_PROXY_SESSION_TOKEN": TOKEN}


def load(
    environ: dict[str, str], flags: dict[str, object] | None = None, env_file: Path | None = None
):  # type: ignore[no-untyped-def]
    return load_settings(flags or {}, environ=environ, env_file=env_file)


def test_defaults_follow_coder() -> None:
    settings = load(BASE)
    assert settings.mode == "workspace-proxy"
    assert settings.http_address == ("127.0.0.1", 3000)
    assert settings.tls_address is None
    assert settings.prometheus_address is None
    assert settings.access_url == "http://127.0.0.1:3000"
    assert settings.primary_access_url == "https://coder.example.com"


def test_prometheus_default_address() -> None:
    settings = load({**BASE, "CODER_PROMETHEUS_ENABLE": "true"})
    assert settings.prometheus_address == ("127.0.0.1", 2112)


def test_flags_beat_environment_which_beats_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "coder-workspace-proxy.env"
    env_file.write_text(
        "# systemd style\n"
        'CODER_PRIMARY_ACCESS_URL="https://from-file.example.com"\n'
        f"CODER_PROXY_SESSION_TOKEN='{TOKEN}'\n"
        "CODER_WILDCARD_ACCESS_URL=*.eu.example.com\n"
        "export CODER_HTTP_ADDRESS=0.0.0.0:8080\n"
    )
    settings = load(
        {"CODER_HTTP_ADDRESS": "127.0.0.1:9000"},
        {"wildcard_access_url": "*.apps.example.com"},
        env_file,
    )
    assert settings.primary_access_url == "https://from-file.example.com"
    assert settings.http_address == ("127.0.0.1", 9000)
    assert settings.wildcard_access_url == "*.apps.example.com"
    assert settings.wildcard_suffix == ".apps.example.com"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "CODER_PRIMARY_ACCESS_URL (not set): expected an http(s) URL"),
        (
            {**BASE, "CODER_PRIMARY_ACCESS_URL": "ftp://x"},
            "CODER_PRIMARY_ACCESS_URL (environment): expected an http(s) URL with a host",
        ),
        ({**BASE, "CODER_PRIMARY_ACCESS_URL": "https://x/path"}, "without a path"),
        (
            {**BASE, "CODER_PROXY_SESSION_TOKEN": "nope"},
            "CODER_PROXY_SESSION_TOKEN (environment): expected the proxy token",
        ),
        (
            {**BASE, "CODER_HTTP_ADDRESS": "localhost"},
            "CODER_HTTP_ADDRESS (environment): expected HOST:PORT",
        ),
        ({**BASE, "CODER_HTTP_ADDRESS": "example.com:80"}, "IP address or localhost"),
        (
            {**BASE, "CODER_TLS_ENABLE": "maybe"},
            "CODER_TLS_ENABLE (environment): expected true or false",
        ),
        (
            {**BASE, "CODER_TLS_ENABLE": "true"},
            "CODER_TLS_CERT_FILE (not set): expected a PEM file",
        ),
        ({**BASE, "CODER_WILDCARD_ACCESS_URL": "apps.example.com"}, "expected a wildcard host"),
        (
            {**BASE, "CODER_TLS_CLIENT_AUTH": "sometimes"},
            "CODER_TLS_CLIENT_AUTH (environment): expected none",
        ),
        (
            {**BASE, "CODER_PROXY_MODE": "relay"},
            "CODER_PROXY_MODE (environment): expected workspace-proxy, satellite or envproxy",
        ),
        (
            {**BASE, "CODER_PROXY_IDLE_TIMEOUT": "-3"},
            "CODER_PROXY_IDLE_TIMEOUT (environment): expected a number of seconds",
        ),
        (
            {**BASE, "CODER_PROXY_WORKERS": "0"},
            "CODER_PROXY_WORKERS (environment): expected an integer >= 1",
        ),
        (
            {**BASE, "CODER_PROXY_MODE": "satellite"},
            "CODER_PROXY_SATELLITE_KEY_FILE (not set): expected a key file path",
        ),
    ],
)
def test_bad_settings_are_one_clear_line(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(environ)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_the_token_is_never_echoed() -> None:
    secret = "2fb6500b-bb47-4783-a0db-dedde895b865:abc"
    with pytest.raises(ConfigError) as caught:
        load({**BASE, "CODER_PROXY_SESSION_TOKEN": secret})
    assert secret not in str(caught.value)
    assert "abc" not in str(caught.value).split("found")[-1]


def test_tls_with_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("c")
    key.write_text("k")
    settings = load(
        {
            **BASE,
            "CODER_TLS_ENABLE": "true",
            "CODER_TLS_CERT_FILE": str(cert),
            "CODER_TLS_KEY_FILE": str(key),
        }
    )
    assert settings.tls_address == ("127.0.0.1", 3443)
    assert settings.access_url == "https://127.0.0.1:3443"


def test_env_file_errors_name_the_line(tmp_path: Path) -> None:
    env_file = tmp_path / "bad.env"
    env_file.write_text("CODER_HTTP_ADDRESS=1.2.3.4:80\nthis is not a setting\n")
    with pytest.raises(ConfigError, match=r"bad\.env:2: expected KEY=VALUE"):
        parse_env_file(env_file)


def test_explicit_env_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="env file not found"):
        load(BASE, env_file=tmp_path / "missing.env")


def test_satellite_mode_needs_no_token(tmp_path: Path) -> None:
    settings = load(
        {
            "CODER_PRIMARY_ACCESS_URL": "http://127.0.0.1:7080",
            "CODER_PROXY_MODE": "satellite",
            "CODER_PROXY_SATELLITE_KEY_FILE": str(tmp_path / "satellite.key"),
            "CODER_SATELLITE_ACCESS_URL": "https://eu.example.com",
        }
    )
    assert settings.mode == "satellite"
    assert settings.access_url == "https://eu.example.com"


def test_an_envproxy_pod_env_runs_the_envproxy_mode() -> None:
    """The env coder/workspace-provider gives its envproxy (workspace-providers-envproxy-only
    templates/envproxy.yaml: ENVPROXY_ACCESS_URL, CEMANAGER_ACCESS_URL, CEMANAGER_TOKEN,
    DEVURL_HOST) is enough: the mode, the primary, the token and the wildcard come from it."""
    settings = load({
        "ENVPROXY_ACCESS_URL": "http://127.0.1.1:17181",
        "CEMANAGER_ACCESS_URL": "http://127.0.0.1:17080",
        "CEMANAGER_TOKEN": "provider-secret-token",
        "DEVURL_HOST": "*.us-east.coder.lab.internal",
    })
    assert settings.mode == "envproxy"
    assert settings.access_url == "http://127.0.1.1:17181"
    assert settings.primary_access_url == "http://127.0.0.1:17080"
    assert settings.envproxy_token == "provider-secret-token"
    assert settings.wildcard_suffix == ".us-east.coder.lab.internal"
    assert "provider-secret-token" not in repr(settings)


def test_an_envproxy_without_its_token_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        load({"CODER_PROXY_MODE": "envproxy", "CEMANAGER_ACCESS_URL": "http://127.0.0.1:17080",
              "ENVPROXY_ACCESS_URL": "http://127.0.1.1:17181"})
    assert str(refused.value).startswith(
        "CODER_PROXY_ENVPROXY_TOKEN (not set): expected the provider's envproxy token"
    )
