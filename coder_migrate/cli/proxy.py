"""``coder-migrate proxy serve``: run the bundled satellite / workspace proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from coder_migrate.cli.options import examples
from coder_migrate.proxy.config import DEFAULT_ENV_FILE, SETTINGS, load_settings

_HELP = {
    "mode": "workspace-proxy (Coder v2) or satellite (Coder v1).",
    "primary_access_url": "URL of the primary (required).",
    "proxy_session_token": "Proxy token from `coder wsproxy create` (workspace-proxy mode).",
    "access_url": "Public URL of this proxy.",
    "wildcard_access_url": "Wildcard host for subdomain apps, e.g. *.eu.example.com.",
    "http_address": "HTTP listen address [127.0.0.1:3000].",
    "tls_address": "TLS listen address [127.0.0.1:3443].",
    "tls_enable": "Serve TLS on the TLS address.",
    "tls_cert_file": "PEM certificate (chain).",
    "tls_key_file": "PEM private key.",
    "tls_client_auth": "none | request | require-any | verify-if-given | require-and-verify.",
    "tls_client_ca_file": "CA bundle for client certificates.",
    "prometheus_enable": "Serve Prometheus metrics.",
    "prometheus_address": "Metrics address [127.0.0.1:2112].",
    "disable_path_apps": "Refuse path-based apps.",
    "satellite_private_key": "Satellite ECDSA private key (PEM); prefer the key file.",
    "satellite_private_key_file": "Satellite key file; created (0600) when missing.",
    "workers": "Worker processes sharing the ports (SO_REUSEPORT) [1].",
    "max_head_bytes": "Largest request head [32768].",
    "max_headers": "Most request headers [100].",
    "max_request_line_bytes": "Longest request target [8192].",
    "max_body_bytes": "Largest request body [1 GiB].",
    "header_timeout": "Seconds to receive a request head [10].",
    "idle_timeout": "Seconds a keep-alive or stalled connection may idle [60].",
    "upstream_connect_timeout": "Seconds to connect upstream, else 504 [5].",
    "upstream_response_timeout": "Seconds to the upstream's response head, else 504 [60].",
    "drain_timeout": "Seconds to finish in-flight requests on shutdown [15].",
    "max_connections_per_client": "Open connections per client address [1024].",
    "verbose": "Debug logging.",
    "max_connections": "Open connections of all clients together [10000].",
    "websocket_idle_timeout": "Seconds an upgraded relay may carry nothing [300].",
    "tunnel_ping_interval": "Seconds of silence before a TCP tunnel is pinged [30].",
    "frame_timeout": "Seconds for a tunnel frame's header or control frame [30].",
    "buffer_budget_mib": "MiB all connections may hold in the proxy's buffers [64].",
    "trusted_origins": "Load balancer CIDRs whose word about the client is taken.",
    "trusted_headers": "Header naming the client behind them (X-Forwarded-For).",
    "proxy_protocol": "Trusted origins send a PROXY protocol header first.",
}


def _options(function: Any) -> Any:
    for name in reversed(list(SETTINGS)):
        flag = "--" + name.replace("_", "-")
        function = click.option(
            flag,
            name,
            default=None,
            metavar="VALUE",
            help=f"{_HELP.get(name, '')} Env: {SETTINGS[name]}.",
        )(function)
    return function


@click.group("proxy", epilog=examples(
    "coder-migrate proxy serve --env-file /etc/coder-workspace-proxy.env",
))
def proxy() -> None:
    """The bundled satellite / workspace proxy server."""


@proxy.command("serve", epilog=examples(
    "CODER_PRIMARY_ACCESS_URL=https://coder.example.com CODER_PROXY_SESSION_TOKEN=... \\",
    "  CODER_WILDCARD_ACCESS_URL='*.eu.example.com' \\",
    "  coder-migrate proxy serve --http-address 0.0.0.0:8080 --workers 2",
    "coder-migrate proxy serve --env-file /etc/coder-workspace-proxy.env",
))
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="CODER_PROXY_ENV_FILE",
    help=f"Settings file (KEY=VALUE) [{DEFAULT_ENV_FILE}, read when present].",
)
@_options
def serve(env_file: Path | None, **flags: str | None) -> None:
    """Relay workspace traffic; settings come from flags, the environment, then the env
    file."""
    from coder_migrate.proxy.app import run

    run(load_settings(flags, env_file=env_file))
