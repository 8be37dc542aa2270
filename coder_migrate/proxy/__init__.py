"""The bundled satellite / workspace proxy server.

Layers, inside out: :mod:`.http1` (request heads, limits, smuggling checks) and
:mod:`.router` (head -> decision) are pure; :mod:`.auth` decides who reaches which workspace;
:mod:`.server` and :mod:`.relay` move bytes (uvloop, httptools, splice); :mod:`.app` runs
workers, listeners, the primary link and metrics; :mod:`.config` reads the settings.
"""

from coder_migrate.proxy.config import Limits, ProxySettings, load_settings

__all__ = ["Limits", "ProxySettings", "load_settings"]
