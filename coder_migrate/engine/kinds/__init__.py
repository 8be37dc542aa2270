"""The deploy's change kinds, one module each: namespace, release, registration, proxy,
proxy token, sites record.

Each module holds one :class:`~coder_migrate.engine.change.Change` subclass: its typed
fields, how it acts, its gate, its inverse and its runbook guide. Modules here may import
``engine.change``, ``engine.guide``, ``engine.world``, ``engine.health``, ``engine.values``,
``inventory``, ``providers`` and ``errors``; never the planner, the runner or a migration.
"""
