"""Adapters at the edge: every library call of the project happens here.

:mod:`.kube` (the kubernetes client, made async), :mod:`.helm` (pyhelm3 and helm's storage),
:mod:`.coder` (the v1 and v2 API clients, satellite keys, plain HTTP probes) and :mod:`.dns`
(PowerDNS, RFC 2136, zone file). Each translates its library's errors into
:mod:`coder_migrate.errors`. Modules here may import ``errors``, ``inventory`` (settings
models) and ``poll`` (waiting) only: never the engine or anything above it.
"""
