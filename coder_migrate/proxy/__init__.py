"""The bundled satellite / workspace proxy server.

Layers, inside out: :mod:`.http1` (request heads, limits, smuggling checks) and
:mod:`.router` (head -> decision) are pure; :mod:`.auth` decides who reaches which workspace;
:mod:`.server` and :mod:`.relay` move bytes (uvloop, httptools); :mod:`.app` runs
workers, listeners, the primary link and metrics; :mod:`.config` reads the settings.
The per-request modules run compiled with mypyc when built (:mod:`.hotpath`), else as Python.
"""

from coder_migrate.proxy import hotpath

hotpath.select()  # before any module of the data path is imported

from coder_migrate.proxy.config import Limits, ProxySettings, load_settings  # noqa: E402

__all__ = ["Limits", "ProxySettings", "load_settings"]
