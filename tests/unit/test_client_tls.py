"""The toolkit's HTTP clients share one TLS context (``coder_migrate.providers.tls``):
building one loads the CA bundle (about 20 ms of CPU), and an apply opens a client per
change and per check, which at 50 regions was most of the engine's CPU."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import certifi
import pytest

from coder_migrate.providers.coder.probes import probe
from coder_migrate.providers.coder.v1 import CoderV1Client
from coder_migrate.providers.dns import PowerDnsAdapter
from coder_migrate.providers.tls import client_tls


@pytest.fixture
def contexts_built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    built: list[Any] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    client_tls.cache_clear()
    yield built
    client_tls.cache_clear()


def test_clients_made_per_change_build_one_tls_context(contexts_built: list[Any]) -> None:
    async def scenario() -> None:
        for _ in range(5):
            async with CoderV1Client("https://coder.example.com", "token"):
                pass
            async with PowerDnsAdapter(api_url="https://pdns.example.com", api_key="key",
                                       zone="example.com"):
                pass
            # An address nothing listens on: the probe's client is built, the GET refused.
            answer = await probe("https://127.0.0.1:9/healthz", timeout=1.0)
            assert not answer.answered

    asyncio.run(scenario())
    assert len(contexts_built) == 1


def test_ssl_cert_file_is_honoured_as_httpx_does(
    contexts_built: list[Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text(Path(certifi.where()).read_text())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    client_tls()
    assert contexts_built == [((), {"cafile": str(bundle)})]
