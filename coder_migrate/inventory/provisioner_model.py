"""The inventory's external provisioners (``coder_provisioners``) and the regional secret store
(``coder_secret_store``): their models, kept apart from :mod:`coder_migrate.inventory.model`,
which they use and which names them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from coder_migrate.inventory.model import ChartRef, K8sName, _frozen

__all__ = ["RESERVED_TAGS", "Provisioners", "SecretStore"]

_TAG_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}$"
#: Tags Coder gives a meaning of its own (provisionersdk.TagScope, TagOwner).
RESERVED_TAGS = ("scope", "owner")


def _tags(value: Mapping[str, Any]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for key, tag in value.items():
        text = str(tag) if isinstance(tag, str | int) and not isinstance(tag, bool) else None
        if not re.fullmatch(_TAG_RE, str(key)) or text is None or not re.fullmatch(_TAG_RE, text):
            raise ValueError(
                "tags as name: value, each of letters, digits and '_.:/-' (no ',' or '=': "
                f"CODER_PROVISIONERD_TAGS joins them as k=v,k=v), found {key!r}: {tag!r}"
            )
        if key in RESERVED_TAGS:
            raise ValueError(f"tags other than {' and '.join(RESERVED_TAGS)} (Coder sets "
                             f"those itself), found {key!r}")
        tags[str(key)] = text
    return tags


class Provisioners(BaseModel):
    """External provisioner daemons of a v2 region (the coder-provisioner chart)."""

    model_config = _frozen()

    replicas: Annotated[int, Field(ge=1, le=100)] = 1
    """Provisioner daemons in the region (coder.replicaCount of its release)."""
    tags: Annotated[dict[str, str], AfterValidator(_tags)] = Field(default_factory=dict)
    """Tags the region's daemons serve (provisionerDaemon.tags), e.g. {region: eu-west}; the
    set differs from every other region's."""
    release: K8sName = "coder-provisioner"
    """Helm release of the region's provisioners (in the region's namespace)."""
    chart: ChartRef | None = None
    """Helm chart; default: coder-provisioner of coder_chart's repository and version."""


class SecretStore(BaseModel):
    """Where a region's provisioner PSK lives: a Secret coder-migrate writes (kubernetes), or
    one the site's own store maintains (external: External Secrets, Vault agent, CSI)."""

    model_config = _frozen()

    kind: Literal["kubernetes", "external"] = "kubernetes"
    """kubernetes: coder-migrate writes the Secret; external: it only checks it exists."""
    secret: K8sName | None = None
    """Name of the Secret (key psk) in the region's namespace; required for external;
    default: coder-provisioner-psk."""

    @property
    def external(self) -> bool:
        """The site's own store maintains the Secret; coder-migrate only reads it."""
        return self.kind in ("external",)  # the store's kind (not a change kind)

    @model_validator(mode="after")
    def _external_names_its_secret(self) -> SecretStore:
        if self.external and self.secret is None:
            raise ValueError("secret: NAME of the Secret your store maintains, for kind external")
        return self
