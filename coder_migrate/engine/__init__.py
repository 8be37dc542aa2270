"""The engine: observe -> plan -> apply -> verify, the same for every operation and door.

What lives here: :mod:`.world` (the :class:`~.world.Engine`: an inventory bound to its
adapters, and the observation of the world), :mod:`.change` (what a change kind is, the
registry type), :mod:`.kinds` (the deploy's kinds, one module each), :mod:`.deploy` (the
deploy's planner), :mod:`.plan` (plans, waves, checksum), :mod:`.apply` (the one runner:
lock, journal, gates), :mod:`.lock`, :mod:`.journal`, :mod:`.health` (site health), :mod:`.run`
(the deploy and DNS operations), :mod:`.site` (one site for the Ansible modules),
:mod:`.status`, :mod:`.values` (Helm values) and :mod:`.guide` (the runbook's vocabulary).

It may import ``inventory``, ``providers``, ``dns``, ``errors``, ``poll`` and ``tasks``; never
``cli``, ``migrations``, ``runbook``, ``proxy`` or ``lab``. Library calls (kubernetes, helm,
httpx, dnspython) happen only in ``providers``.
"""
