"""Coder API clients (v1 Classic and v2) sharing one transport, retry and error layer."""

from coder_migrate.providers.coder.models_v1 import (
    BuildEvent,
    CoderVersion,
    KubernetesProvider,
    Organization,
    Satellite,
    SatelliteKey,
    V1User,
    Workspace,
)
from coder_migrate.providers.coder.models_v2 import (
    AgentAddress,
    BuildInfo,
    CreatedProxy,
    CryptoKey,
    ProxyRegistration,
    ProxyStatus,
    Region,
    V2User,
    WorkspaceProxy,
)
from coder_migrate.providers.coder.transport import (
    OPERATIONS_RETRY,
    CoderTransport,
    RetryPolicy,
)
from coder_migrate.providers.coder.v1 import CoderV1Client, CoderV1SatelliteClient
from coder_migrate.providers.coder.v2 import CoderV2Client, CoderV2ProxyClient, signed_token_from

__all__ = [
    "OPERATIONS_RETRY",
    "AgentAddress",
    "BuildEvent",
    "BuildInfo",
    "CoderTransport",
    "CoderV1Client",
    "CoderV1SatelliteClient",
    "CoderV2Client",
    "CoderV2ProxyClient",
    "CoderVersion",
    "CreatedProxy",
    "CryptoKey",
    "KubernetesProvider",
    "Organization",
    "ProxyRegistration",
    "ProxyStatus",
    "Region",
    "RetryPolicy",
    "Satellite",
    "SatelliteKey",
    "V1User",
    "V2User",
    "Workspace",
    "WorkspaceProxy",
    "signed_token_from",
]
