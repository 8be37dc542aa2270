"""The local lab (docs/lab.md): binaries built once from the official Go modules
(:mod:`~coder_migrate.lab.build`), Kubernetes clusters through kwokctl, PowerDNS and BIND,
and the Coder API emulator (:mod:`~coder_migrate.lab.coderd`), started and stopped by
:mod:`~coder_migrate.lab.runtime`. :mod:`~coder_migrate.lab.tools` gives the rest of the
project the lab's helm, its environment and the stand-in charts.
"""
