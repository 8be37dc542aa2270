"""Settings of the bundled proxy: flags, then environment, then the systemd env file.

The names are Coder's (seed 003, ``coder wsproxy server``): ``CODER_PRIMARY_ACCESS_URL``,
``CODER_PROXY_SESSION_TOKEN``, ``CODER_ACCESS_URL``, ``CODER_WILDCARD_ACCESS_URL``,
``CODER_HTTP_ADDRESS``, ``CODER_TLS_*``, ``CODER_PROMETHEUS_*``. Settings of this proxy only
(mode, workers, limits, satellite key file) are ``CODER_PROXY_*``. The names coder/coder
1.21.0 gives a satellite (``CODER_SATELLITE_ACCESS_URL``, ``CODER_SATELLITE_PRIVATE_KEY``,
``DEVURL_HOST``; ``CODER_PRIMARY_ACCESS_URL`` is Coder's own) and coder/workspace-provider
gives an envproxy (``ENVPROXY_ACCESS_URL``, ``CEMANAGER_ACCESS_URL``, ``CEMANAGER_TOKEN``) are
read too, so a pod's env runs the proxy as it is (the lab's region pods, docs/lab.md); an env
with a satellite's access URL or key and no ``CODER_PROXY_MODE`` is a satellite, one with an
envproxy's access URL or token an envproxy. Everything is checked before the
server starts; a bad value is one :class:`~coder_migrate.errors.ConfigError` line naming the
setting, where it came from and what was expected. Secrets are never echoed.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from coder_migrate.errors import ConfigError

__all__ = [
    "DEFAULT_ENV_FILE",
    "SETTINGS",
    "Hardening",
    "Limits",
    "ProxyMode",
    "ProxySettings",
    "TlsClientAuth",
    "load_settings",
    "parse_env_file",
]

DEFAULT_ENV_FILE = Path("/etc/coder.d/coder-workspace-proxy.env")
ProxyMode = Literal["workspace-proxy", "satellite", "envproxy"]
_MODES = ("workspace-proxy", "satellite", "envproxy")
TlsClientAuth = Literal["none", "request", "require-any", "verify-if-given", "require-and-verify"]
_TLS_CLIENT_AUTH = ("none", "request", "require-any", "verify-if-given", "require-and-verify")
_TOKEN_RE = re.compile(r"^[0-9a-fA-F-]{36}:[0-9a-f]{64}$")
_HOST_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")

# Every setting: name -> environment variable. The CLI flag is the name with dashes.
SETTINGS: dict[str, str] = {
    "mode": "CODER_PROXY_MODE",
    "primary_access_url": "CODER_PRIMARY_ACCESS_URL",
    "proxy_session_token": "CODER_PROXY_SESSION_TOKEN",
    "access_url": "CODER_ACCESS_URL",
    "wildcard_access_url": "CODER_WILDCARD_ACCESS_URL",
    "http_address": "CODER_HTTP_ADDRESS",
    "tls_address": "CODER_TLS_ADDRESS",
    "tls_enable": "CODER_TLS_ENABLE",
    "tls_cert_file": "CODER_TLS_CERT_FILE",
    "tls_key_file": "CODER_TLS_KEY_FILE",
    "tls_client_auth": "CODER_TLS_CLIENT_AUTH",
    "tls_client_ca_file": "CODER_TLS_CLIENT_CA_FILE",
    "prometheus_enable": "CODER_PROMETHEUS_ENABLE",
    "prometheus_address": "CODER_PROMETHEUS_ADDRESS",
    "disable_path_apps": "CODER_DISABLE_PATH_APPS",
    "satellite_private_key": "CODER_SATELLITE_PRIVATE_KEY",
    "satellite_private_key_file": "CODER_PROXY_SATELLITE_KEY_FILE",
    "envproxy_token": "CODER_PROXY_ENVPROXY_TOKEN",
    "workers": "CODER_PROXY_WORKERS",
    "max_head_bytes": "CODER_PROXY_MAX_HEAD_BYTES",
    "max_headers": "CODER_PROXY_MAX_HEADERS",
    "max_request_line_bytes": "CODER_PROXY_MAX_REQUEST_LINE_BYTES",
    "max_body_bytes": "CODER_PROXY_MAX_BODY_BYTES",
    "header_timeout": "CODER_PROXY_HEADER_TIMEOUT",
    "idle_timeout": "CODER_PROXY_IDLE_TIMEOUT",
    "upstream_connect_timeout": "CODER_PROXY_UPSTREAM_CONNECT_TIMEOUT",
    "upstream_response_timeout": "CODER_PROXY_UPSTREAM_RESPONSE_TIMEOUT",
    "drain_timeout": "CODER_PROXY_DRAIN_TIMEOUT",
    "max_connections_per_client": "CODER_PROXY_MAX_CONNECTIONS_PER_CLIENT",
    "verbose": "CODER_VERBOSE",
}
# The names coder/coder 1.21.0 gives a satellite's settings (templates/coderd.yaml), read as
# fallbacks so the proxy runs with a pod's env as the chart renders it (docs/proxy.md "Chart
# env names").
_ALIASES = {
    "access_url": ("CODER_SATELLITE_ACCESS_URL", "ENVPROXY_ACCESS_URL"),
    "wildcard_access_url": ("DEVURL_HOST",),
    # coder/workspace-provider's envproxy (templates/envproxy.yaml): its primary and token.
    "primary_access_url": ("CEMANAGER_ACCESS_URL",),
    "envproxy_token": ("CEMANAGER_TOKEN",),
}
# Variables only a Coder v1 satellite (`coderd replica`) reads: without CODER_PROXY_MODE they
# make the mode satellite; otherwise it is workspace-proxy, what `wsproxy server` runs.
_SATELLITE_ONLY_ENV = ("CODER_SATELLITE_ACCESS_URL", "CODER_SATELLITE_PRIVATE_KEY")
# Variables only an envproxy (`envproxy run`) reads: without CODER_PROXY_MODE, envproxy.
_ENVPROXY_ONLY_ENV = ("ENVPROXY_ACCESS_URL", "CEMANAGER_TOKEN")
_SECRET_SETTINGS = frozenset({"proxy_session_token", "satellite_private_key", "envproxy_token"})


@dataclass(frozen=True, slots=True)
class Limits:
    """Hardening limits of the data path."""

    max_head_bytes: int = 32 * 1024
    max_headers: int = 100
    max_request_line_bytes: int = 8 * 1024
    max_body_bytes: int = 1024 * 1024 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    upstream_connect_timeout: float = 5.0
    upstream_response_timeout: float = 60.0
    drain_timeout: float = 15.0
    max_connections_per_client: int = 1024


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Validated settings; ``access_url`` and ``primary_access_url`` have no trailing slash."""

    mode: ProxyMode
    primary_access_url: str
    access_url: str
    proxy_session_token: str = field(default="", repr=False)
    wildcard_access_url: str = ""
    http_address: tuple[str, int] | None = ("127.0.0.1", 3000)
    tls_address: tuple[str, int] | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_auth: TlsClientAuth = "none"
    tls_client_ca_file: Path | None = None
    prometheus_address: tuple[str, int] | None = None
    disable_path_apps: bool = False
    satellite_private_key: str = field(default="", repr=False)
    satellite_private_key_file: Path | None = None
    envproxy_token: str = field(default="", repr=False)
    workers: int = 1
    limits: Limits = field(default_factory=Limits)
    hardening: Hardening = field(default_factory=lambda: Hardening())
    verbose: bool = False
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def access_host(self) -> str:
        return (urlsplit(self.access_url).hostname or "").lower()

    @property
    def wildcard_suffix(self) -> str:
        """``*.apps.example.com`` -> ``.apps.example.com``; ``*--apps.example.com`` ->
        ``--apps.example.com``; empty when subdomain apps are off."""
        return self.wildcard_access_url[1:].lower() if self.wildcard_access_url else ""

    @property
    def wildcard_hostname(self) -> str:
        return self.wildcard_access_url


def parse_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's EnvironmentFile reads them (quotes, comments)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the env file ({error.strerror})") from error
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, found a line without one")
        value = value.strip()
        if value[:1] in ("'", '"'):
            try:
                parts = shlex.split(value)
            except ValueError as error:
                raise ConfigError(f"{path}:{number}: {key}: unbalanced quotes") from error
            value = parts[0] if len(parts) == 1 else " ".join(parts)
        values[key] = value
    return values


class _Reader:
    """Looks a setting up in flags, then the environment, then the env file."""

    def __init__(
        self,
        flags: Mapping[str, object | None],
        environ: Mapping[str, str],
        file_values: Mapping[str, str],
        file_name: str,
    ) -> None:
        self.flags = flags
        self.environ = environ
        self.file_values = file_values
        self.file_name = file_name
        self.sources: dict[str, str] = {}

    def raw(self, name: str) -> str | None:
        flag = self.flags.get(name)
        if flag is not None:
            self.sources[name] = f"--{name.replace('_', '-')} (flag)"
            return str(flag)
        for variable in (SETTINGS[name], *_ALIASES.get(name, ())):
            if variable in self.environ:
                self.sources[name] = f"{variable} (environment)"
                return self.environ[variable]
            if variable in self.file_values:
                self.sources[name] = f"{self.file_name}: {variable} (env file)"
                return self.file_values[variable]
        return None

    def variable(self, variable: str) -> str | None:
        """A variable that is not a setting of its own, from the environment or env file."""
        if variable in self.environ:
            return self.environ[variable]
        return self.file_values.get(variable)

    def where(self, name: str) -> str:
        # The parenthesis also keeps "..._TOKEN: expected" from looking like a secret to redact.
        return self.sources.get(name, f"{SETTINGS[name]} (not set)")

    def fail(self, name: str, expected: str, found: str | None = None) -> ConfigError:
        shown = "(sensitive)" if name in _SECRET_SETTINGS else repr(found)
        tail = f", found {shown}" if found is not None else ""
        return ConfigError(f"{self.where(name)}: expected {expected}{tail}")

    def text(self, name: str, default: str = "") -> str:
        value = self.raw(name)
        return default if value is None else value.strip()

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise self.fail(name, "true or false", value)

    def number(self, name: str, default: float, *, minimum: float, integer: bool) -> float:
        value = self.raw(name)
        if value is None:
            return default
        text = value.strip().removesuffix("s") if not integer else value.strip()
        try:
            number = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number of seconds"
            raise self.fail(name, f"{kind} >= {minimum:g}", value) from None
        if number < minimum:
            kind = "an integer" if integer else "a number of seconds"
            raise self.fail(name, f"{kind} >= {minimum:g}", value)
        return number

    def address(self, name: str, default: str) -> tuple[str, int] | None:
        value = self.text(name, default)
        if not value:
            return None
        host, sep, port_text = value.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ":8080" means every interface
        if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise self.fail(name, "HOST:PORT with a port from 0 to 65535", value)
        if host != "localhost":
            try:
                ip_address(host)
            except ValueError:
                raise self.fail(name, "HOST:PORT with an IP address or localhost", value) from None
        return host, int(port_text)

    def url(self, name: str, default: str = "", *, required: bool) -> str:
        value = self.text(name, default)
        if not value:
            if required:
                raise self.fail(name, "an http(s) URL, e.g. https://coder.example.com (required)")
            return ""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail(name, "an http(s) URL with a host", value)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise self.fail(name, "a URL without a path, query or fragment", value)
        if parts.username or parts.password:
            raise self.fail(name, "a URL without credentials", "(sensitive)")
        return f"{parts.scheme}://{parts.netloc}".lower()

    def file(self, name: str) -> Path | None:
        value = self.text(name)
        if not value:
            return None
        path = Path(value)
        if not path.is_file():
            raise self.fail(name, "an existing readable file", value)
        return path


def _wildcard(reader: _Reader) -> str:
    value = reader.text("wildcard_access_url").lower()
    if not value:
        return ""
    if "://" in value:  # Coder accepts a scheme here and ignores it
        value = value.split("://", 1)[1]
    value = value.rstrip("/")
    host = value[1:].lstrip(".").split(":", 1)[0]
    labels = host.split(".")
    if (
        not value.startswith("*")
        or len(labels) < 2
        or not all(_HOST_LABEL_RE.match(label) for label in labels)
        or "/" in value
    ):
        raise reader.fail("wildcard_access_url", "a wildcard host like *.apps.example.com", value)
    return value


def _default_mode(reader: _Reader) -> str:
    if any(reader.variable(name) for name in _ENVPROXY_ONLY_ENV):
        return "envproxy"
    satellite = any(reader.variable(name) for name in _SATELLITE_ONLY_ENV)
    return "satellite" if satellite else "workspace-proxy"


def load_settings(
    flags: Mapping[str, object | None] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
) -> ProxySettings:
    """Read and check every setting. ``env_file`` given explicitly must exist; otherwise
    :data:`DEFAULT_ENV_FILE` is read when present and readable."""

    environ = os.environ if environ is None else environ
    file_values, file_name = _env_file_values(env_file)
    reader = _Reader(flags or {}, environ, file_values, file_name)

    mode = reader.text("mode", _default_mode(reader))
    if mode not in _MODES:
        raise reader.fail("mode", "workspace-proxy, satellite or envproxy", mode)
    primary = reader.url("primary_access_url", required=True)
    token = reader.text("proxy_session_token")
    if mode == "workspace-proxy" and not _TOKEN_RE.match(token):
        expected = "the proxy token from `coder wsproxy create`: <uuid>:<64 hex> (required)"
        raise reader.fail("proxy_session_token", expected, token if token else None)

    http_address = reader.address("http_address", "127.0.0.1:3000")
    tls_address, cert, key, client_auth, client_ca = _tls(reader)
    if http_address is None and tls_address is None:
        raise reader.fail("http_address", "a listen address (or CODER_TLS_ENABLE with an address)")

    access_url = _access_url(reader, http_address, tls_address)

    prometheus_address = None
    if reader.boolean("prometheus_enable", False):
        prometheus_address = reader.address("prometheus_address", "127.0.0.1:2112")

    satellite_key, satellite_key_file = _satellite_key(reader, mode)
    limits = _read_limits(reader)
    workers = int(reader.number("workers", 1, minimum=1, integer=True))
    if workers > 64:
        raise reader.fail("workers", "at most 64 worker processes", str(workers))
    return ProxySettings(
        mode=mode,  # type: ignore[arg-type]  # checked against the modes above
        primary_access_url=primary,
        proxy_session_token=token,
        access_url=access_url,
        wildcard_access_url=_wildcard(reader),
        http_address=http_address,
        tls_address=tls_address,
        tls_cert_file=cert,
        tls_key_file=key,
        tls_client_auth=client_auth,  # type: ignore[arg-type]  # checked above
        tls_client_ca_file=client_ca,
        prometheus_address=prometheus_address,
        disable_path_apps=reader.boolean("disable_path_apps", False),
        satellite_private_key=satellite_key,
        satellite_private_key_file=satellite_key_file,
        envproxy_token=_envproxy_token(reader, mode),
        workers=workers,
        limits=limits,
        hardening=read_hardening(reader),
        verbose=reader.boolean("verbose", False),
        sources=dict(reader.sources),
    )


def _access_url(
    reader: _Reader, http_address: tuple[str, int] | None, tls_address: tuple[str, int] | None
) -> str:
    """``CODER_ACCESS_URL``, or the listen URL (TLS first) when it is not set."""
    default_scheme, default_address = (
        ("https", tls_address) if tls_address else ("http", http_address)
    )
    assert default_address is not None
    listen_host = default_address[0] if default_address[0] != "0.0.0.0" else "127.0.0.1"  # noqa: S104
    return reader.url(
        "access_url", f"{default_scheme}://{listen_host}:{default_address[1]}", required=False
    )


def _tls(
    reader: _Reader,
) -> tuple[tuple[str, int] | None, Path | None, Path | None, str, Path | None]:
    """TLS listen address, certificate, key, client auth mode and client CA."""
    tls_enable = reader.boolean("tls_enable", False)
    tls_address = reader.address("tls_address", "127.0.0.1:3443") if tls_enable else None
    client_auth = reader.text("tls_client_auth", "none").lower()
    if client_auth not in _TLS_CLIENT_AUTH:
        raise reader.fail("tls_client_auth", " | ".join(_TLS_CLIENT_AUTH), client_auth)
    if not tls_enable:
        return None, None, None, client_auth, None
    cert = reader.file("tls_cert_file")
    key = reader.file("tls_key_file")
    if cert is None or key is None:
        missing = "tls_cert_file" if cert is None else "tls_key_file"
        raise reader.fail(missing, "a PEM file when CODER_TLS_ENABLE is true")
    client_ca = reader.file("tls_client_ca_file")
    if client_auth in ("verify-if-given", "require-and-verify") and client_ca is None:
        raise reader.fail("tls_client_ca_file", f"a CA file for client auth {client_auth}")
    return tls_address, cert, key, client_auth, client_ca


def _env_file_values(env_file: Path | None) -> tuple[dict[str, str], str]:
    if env_file is not None:
        if not env_file.is_file():
            raise ConfigError(f"{env_file}: env file not found")
        return parse_env_file(env_file), str(env_file)
    if DEFAULT_ENV_FILE.is_file() and os.access(DEFAULT_ENV_FILE, os.R_OK):
        # Under systemd the unit's EnvironmentFile= already passed these settings; the file
        # itself is root's (0600), and the service user need not read it.
        return parse_env_file(DEFAULT_ENV_FILE), str(DEFAULT_ENV_FILE)
    return {}, str(DEFAULT_ENV_FILE)


def _envproxy_token(reader: _Reader, mode: str) -> str:
    token = reader.text("envproxy_token")
    if mode == "envproxy" and not token:
        raise reader.fail("envproxy_token", "the provider's envproxy token (envproxy.token of "
                          "coder/workspace-provider, from `coder providers create`) (required)")
    return token


def _satellite_key(reader: _Reader, mode: str) -> tuple[str, Path | None]:
    satellite_key = reader.text("satellite_private_key")
    satellite_key_file_text = reader.text("satellite_private_key_file")
    satellite_key_file = Path(satellite_key_file_text) if satellite_key_file_text else None
    if mode != "satellite":
        return satellite_key, satellite_key_file
    if satellite_key and "PRIVATE KEY-----" not in satellite_key:
        raise reader.fail("satellite_private_key", "a PEM ECDSA private key", "(sensitive)")
    if not satellite_key and satellite_key_file is None:
        raise reader.fail(
            "satellite_private_key_file",
            "a key file path (created when missing) or CODER_SATELLITE_PRIVATE_KEY",
        )
    if satellite_key_file is not None and not satellite_key_file.parent.is_dir():
        raise reader.fail(
            "satellite_private_key_file",
            "a path in an existing directory",
            str(satellite_key_file),
        )
    return satellite_key, satellite_key_file


def _read_limits(reader: _Reader) -> Limits:
    defaults = Limits()

    def integer(name: str, minimum: int) -> int:
        return int(reader.number(name, getattr(defaults, name), minimum=minimum, integer=True))

    def seconds(name: str, minimum: float = 0.1) -> float:
        return reader.number(name, getattr(defaults, name), minimum=minimum, integer=False)

    return Limits(
        max_head_bytes=integer("max_head_bytes", 1024),
        max_headers=integer("max_headers", 8),
        max_request_line_bytes=integer("max_request_line_bytes", 256),
        max_body_bytes=integer("max_body_bytes", 0),
        header_timeout=seconds("header_timeout"),
        idle_timeout=seconds("idle_timeout"),
        upstream_connect_timeout=seconds("upstream_connect_timeout"),
        upstream_response_timeout=seconds("upstream_response_timeout"),
        drain_timeout=seconds("drain_timeout", 0),
        max_connections_per_client=integer("max_connections_per_client", 1),
    )


# -- Hardening: caps, keep-alives, buffers, trusted load balancers ---------------------------
# Kept in a section of their own. CODER_PROXY_TRUSTED_ORIGINS / _HEADERS are Coder's own
# names (``coder wsproxy server --proxy-trusted-origins/--proxy-trusted-headers``); the rest
# are this proxy's.

_HARDENING_SETTINGS = {
    "max_connections": "CODER_PROXY_MAX_CONNECTIONS",
    "websocket_idle_timeout": "CODER_PROXY_WEBSOCKET_IDLE_TIMEOUT",
    "tunnel_ping_interval": "CODER_PROXY_TUNNEL_PING_INTERVAL",
    "frame_timeout": "CODER_PROXY_FRAME_TIMEOUT",
    "buffer_budget_mib": "CODER_PROXY_BUFFER_BUDGET_MIB",
    "trusted_origins": "CODER_PROXY_TRUSTED_ORIGINS",
    "trusted_headers": "CODER_PROXY_TRUSTED_HEADERS",
    "proxy_protocol": "CODER_PROXY_PROXY_PROTOCOL",
}
SETTINGS.update(_HARDENING_SETTINGS)
_TRUSTED_HEADERS = ("x-forwarded-for",)


@dataclass(frozen=True, slots=True)
class Hardening:
    """Bounds that no client can stretch (docs/proxy.md "Bounds")."""

    max_connections: int = 10_000
    websocket_idle_timeout: float = 300.0
    tunnel_ping_interval: float = 30.0
    frame_timeout: float = 30.0
    buffer_budget_bytes: int = 64 * 1024 * 1024
    trusted_origins: tuple[IPv4Network | IPv6Network, ...] = ()
    trusted_header: str = ""
    proxy_protocol: bool = False


def _networks(reader: _Reader) -> tuple[IPv4Network | IPv6Network, ...]:
    text = reader.text("trusted_origins")
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise reader.fail(
                "trusted_origins", "comma-separated CIDRs or addresses", item
            ) from None
    return tuple(networks)


def read_hardening(reader: _Reader) -> Hardening:
    defaults = Hardening()
    headers = [h.strip().lower() for h in reader.text("trusted_headers").split(",") if h.strip()]
    for header in headers:
        if header not in _TRUSTED_HEADERS:
            raise reader.fail("trusted_headers", "X-Forwarded-For", header)
    return Hardening(
        max_connections=int(
            reader.number("max_connections", defaults.max_connections, minimum=1, integer=True)
        ),
        websocket_idle_timeout=reader.number(
            "websocket_idle_timeout", defaults.websocket_idle_timeout, minimum=1, integer=False
        ),
        tunnel_ping_interval=reader.number(
            "tunnel_ping_interval", defaults.tunnel_ping_interval, minimum=0.5, integer=False
        ),
        frame_timeout=reader.number(
            "frame_timeout", defaults.frame_timeout, minimum=0.5, integer=False
        ),
        buffer_budget_bytes=int(
            reader.number(
                "buffer_budget_mib", defaults.buffer_budget_bytes >> 20, minimum=1, integer=True
            )
        )
        << 20,
        trusted_origins=_networks(reader),
        trusted_header=headers[0] if headers else "",
        proxy_protocol=reader.boolean("proxy_protocol", False),
    )
