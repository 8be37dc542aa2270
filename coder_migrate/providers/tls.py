"""The TLS context every HTTP client of the toolkit verifies servers with.

httpx builds a new context for each client it makes, loading the whole CA bundle again
(about 20 ms of CPU); an apply opens a client per change and per check, so at 50 regions
that was most of the engine's own CPU (docs/benchmarks.md). The context is built once per
process, the way httpx builds its default, and shared (an ``SSLContext`` is safe to share
between clients and threads).
"""

from __future__ import annotations

import functools
import os
import ssl

import certifi

__all__ = ["client_tls"]


@functools.cache
def client_tls() -> ssl.SSLContext:
    """httpx's default verification: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when set, else
    certifi's bundle."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=certifi.where())
