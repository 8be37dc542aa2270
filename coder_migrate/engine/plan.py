"""The plan: ordered, typed changes grouped in region waves, with a checksum.

A plan is computed from the inventory and what is observed, before anything changes. It is
serialisable (``--out plan.json``) and carries a sha256 of its content so ``apply plan.json``
can refuse a plan that a fresh computation no longer reproduces (octoDNS's checksum, Terraform's
stale-plan refusal). Values marked sensitive never enter a plan: changes carry only
``(sensitive)`` in their place, so a plan file can be shared and reviewed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationInfo, field_validator

from coder_migrate.engine.change import SENSITIVE, Action, Change, Kinds
from coder_migrate.errors import StalePlan, UnsafePlan

__all__ = [
    "SENSITIVE",
    "Action",
    "Change",
    "Plan",
    "Wave",
]


class Wave(BaseModel):
    """Changes applied together; a health gate closes each wave before the next starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    regions: tuple[str, ...]
    changes: tuple[SerializeAsAny[Change], ...]

    @field_validator("changes", mode="before")
    @classmethod
    def _of_their_kinds(cls, value: Any, info: ValidationInfo) -> Any:
        """Changes read from JSON become instances of their kind (the context's ``kinds``)."""
        if not isinstance(value, list | tuple) or all(isinstance(c, Change) for c in value):
            return value
        kinds = (info.context or {}).get("kinds")
        if not isinstance(kinds, Kinds):
            raise ValueError("changes can only be read with the registry of change kinds")
        return tuple(kinds.parse(c) for c in value)

    @property
    def effective(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action is not Action.KEEP)


class Plan(BaseModel):
    """Everything apply would do, in order; nothing has been changed yet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = 1
    inventory: str
    operation: str = "deploy"
    """``deploy`` or a migration name such as ``v1.20-to-v1.21``."""
    limit: tuple[str, ...] = ()
    waves: tuple[Wave, ...] = ()
    notes: tuple[str, ...] = ()
    """Statements the reader must see, e.g. a provider that cannot do geo routing."""
    checksum: str = Field(default="", description="sha256 of the content without this field")

    @classmethod
    def build(
        cls,
        *,
        inventory: str,
        waves: Iterable[Wave],
        operation: str = "deploy",
        limit: Iterable[str] = (),
        notes: Iterable[str] = (),
    ) -> Plan:
        plan = cls(
            inventory=inventory,
            operation=operation,
            limit=tuple(limit),
            waves=tuple(w for w in waves if w.changes),
            notes=tuple(notes),
        )
        return plan.model_copy(update={"checksum": plan.content_checksum()})

    def content_checksum(self) -> str:
        content = self.model_dump(mode="json", exclude={"checksum"})
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def changes(self) -> Iterator[Change]:
        for wave in self.waves:
            yield from wave.changes

    @property
    def effective_changes(self) -> list[Change]:
        return [c for c in self.changes if c.action is not Action.KEEP]

    @property
    def is_empty(self) -> bool:
        return not self.effective_changes

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, kinds: Kinds, source: str = "plan file") -> Plan:
        """A plan file read back: every change an instance of its kind in *kinds*."""
        try:
            plan = cls.model_validate_json(text, context={"kinds": kinds})
        except ValueError as error:
            raise StalePlan(f"{source}: not a coder-migrate plan ({_first_line(error)})") from None
        if plan.checksum != plan.content_checksum():
            raise StalePlan(f"{source}: its checksum does not match its content (edited by hand?)")
        return plan

    def ensure_matches(self, fresh: Plan, *, source: str = "plan file") -> None:
        """Refuse to apply *self* when a fresh plan computes something else."""
        if fresh.checksum != self.checksum:
            raise StalePlan(
                f"{source} is stale: the inventory or the observed state changed since it was "
                f"made (saved {self.checksum[:12]}, now {fresh.checksum[:12]}); run plan again"
            )

    def without(self, ids: set[str]) -> Plan:
        """This plan without the changes *ids* (and without depending on them)."""
        waves = [
            Wave(name=w.name, regions=w.regions, changes=tuple(
                c.model_copy(update={"depends_on": tuple(d for d in c.depends_on if d not in ids)})
                for c in w.changes if c.id not in ids
            ))
            for w in self.waves
        ]
        return Plan.build(inventory=self.inventory, waves=waves, operation=self.operation,
                          limit=self.limit, notes=self.notes)

    def difference(self, fresh: Plan) -> str:
        """What *fresh* plans that this plan does not, and the other way round."""

        def summaries(plan: Plan) -> set[str]:
            return {f"{c.id} ({c.action.value}: {c.reason})" for c in plan.changes}

        gone = sorted(summaries(self) - summaries(fresh))
        new = sorted(summaries(fresh) - summaries(self))
        parts = [f"no longer planned: {', '.join(gone)}"] if gone else []
        parts += [f"now planned: {', '.join(new)}"] if new else []
        return "; ".join(parts) or "the order or notes of the changes differ"

    def raise_if_unsafe(self, *, force: bool) -> None:
        """Destructive changes need ``--force``; list every one so the user sees them all."""
        if force:
            return
        destructive = [c for c in self.effective_changes if c.needs_force]
        if destructive:
            listed = "; ".join(c.summary() for c in destructive)
            raise UnsafePlan(
                f"{len(destructive)} change(s) need --force: {listed}"
            )


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
