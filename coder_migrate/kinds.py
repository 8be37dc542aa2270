"""Every change kind coder-migrate knows, listed once.

:data:`KINDS` reads plan files back (each change becomes an instance of its kind) and maps
journal entries to the kind that undoes them. A new kind is one module with one
:class:`~coder_migrate.engine.change.Change` subclass, and its class in this list.
"""

from __future__ import annotations

from coder_migrate.dns.rrset_change import DnsRRSetChange
from coder_migrate.engine.change import Kinds
from coder_migrate.engine.kinds.database_secret import DatabaseSecretChange
from coder_migrate.engine.kinds.namespace import NamespaceChange
from coder_migrate.engine.kinds.provisioner_psk import ProvisionerPskChange
from coder_migrate.engine.kinds.provisioner_release import ProvisionerReleaseChange
from coder_migrate.engine.kinds.proxy import WorkspaceProxyChange
from coder_migrate.engine.kinds.proxy_token import ProxyTokenChange
from coder_migrate.engine.kinds.registration import SatelliteRegistrationChange
from coder_migrate.engine.kinds.release import HelmReleaseChange
from coder_migrate.engine.kinds.site_record import SiteRecordChange
from coder_migrate.migrations.v1_20_to_v1_21.dns_check import DnsCheckChange
from coder_migrate.migrations.v1_20_to_v1_21.networking_v2 import ProviderNetworkingV2Change
from coder_migrate.migrations.v1_20_to_v1_21.rebuild import WorkspaceRebuildChange
from coder_migrate.migrations.v1_20_to_v1_21.retain import RetainReleaseChange

__all__ = ["KINDS"]

KINDS = Kinds((
    NamespaceChange,
    HelmReleaseChange,
    SatelliteRegistrationChange,
    WorkspaceProxyChange,
    ProxyTokenChange,
    ProvisionerPskChange,
    ProvisionerReleaseChange,
    SiteRecordChange,
    DatabaseSecretChange,
    DnsRRSetChange,
    ProviderNetworkingV2Change,
    WorkspaceRebuildChange,
    DnsCheckChange,
    RetainReleaseChange,
))
