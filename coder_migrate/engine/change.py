"""What a change kind is: the base class every kind subclasses, and the registry of kinds.

A kind is one class in one module (``engine/kinds/``, ``dns/rrset_change.py``,
``migrations/<name>/``): its typed fields (``kind`` is the discriminator of plan JSON;
``before``/``after`` are pydantic models of the kind's own shape), and what apply, rollback,
status and the runbook ask of it:

- :meth:`Change.describe`: the one line a plan, a journal entry and the Ansible result show;
- :meth:`Change.act`: carry it out, idempotently against what is there now;
- :meth:`Change.verify`: its gate (a :class:`Gate`, ``None`` when it has none): a site's
  health, or the DNS wave's verify step;
- :meth:`Change.inverse`: the change that undoes a journalled one, ``None`` when nothing is
  left to undo, or :class:`Irreversible` with the reason;
- :meth:`Change.guide`: the runbook's words and the commands to check it by hand.

:class:`Kinds` is the explicit list of kinds a process knows (``coder_migrate/kinds.py``
holds the default): it reads plan files and maps journal entries back to their kind.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from coder_migrate.errors import ApplyError
from coder_migrate.sensitive import SENSITIVE

if TYPE_CHECKING:
    from coder_migrate.engine.guide import Guide
    from coder_migrate.engine.world import Engine
    from coder_migrate.inventory import Primary, Region

__all__ = [
    "SENSITIVE",
    "Action",
    "ApplyContext",
    "Change",
    "Done",
    "Gate",
    "Irreversible",
    "Kinds",
    "Progress",
    "UndoContext",
    "change_id",
]

Progress = Callable[[str, str, str], None]
"""``(region, phase, text)``: phase is started, done, failed, gate or gate-ok."""


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ACT = "act"  # a one-off operation with an effect, e.g. a rebuild or a registration
    KEEP = "keep"  # deliberately left alone, shown so the reader knows it was considered


def change_id(region: str, kind: str, name: str) -> str:
    """``<region>/<kind>/<name>``: the journal keys progress by it."""
    return f"{region}/{kind}/{name}"


@dataclass(frozen=True)
class Gate:
    """A check that closes a wave: met when ``check()`` returns ""."""

    key: str
    """Gates with one key are checked once per wave (e.g. ``health/eu-west``, ``dns/answers``)."""
    site: str
    check: Callable[[], Awaitable[str]]
    """One check; "" when met, else what is wrong. Polled to the apply's gate timeout."""
    waits: bool = False
    """``check`` waits to its own deadline and shows its own progress (the DNS wave's verify
    step): the runner calls it once instead of polling it."""


@dataclass(frozen=True)
class Irreversible:
    """A journalled change rollback cannot undo, and why."""

    reason: str


@dataclass(frozen=True)
class ApplyContext:
    """What a change acts with: the engine's adapters and this apply's settings."""

    engine: Engine
    run: str
    """The apply run's id (journal ``run``, helm release description)."""
    gate_timeout: float
    """Seconds a gate, or a new satellite serving its key, may take."""
    operation: str = ""
    """The plan's operation (``deploy``, ``dns``, a migration, its rollback)."""
    dns_verify_timeout: float | None = None
    """Seconds the DNS wave's verify step waits for the planned answers; ``None``: no verify
    step (the ``geodns`` role's ``geodns_verify: false``)."""
    wave_regions: frozenset[str] = frozenset()
    """The sites with changes in the wave whose gates are asked for (set by the runner)."""
    progress: Progress | None = None

    def site(self, name: str) -> Primary | Region:
        """The inventory site (the primary or a region) of a change's ``region``."""
        try:
            return self.engine.site(name)
        except KeyError:
            raise ApplyError(f"{name}: not the primary nor a region of the inventory") from None


@dataclass
class Done:
    """A change an operation journalled since the last rollback of it (rollback's input)."""

    change_id: str
    region: str
    kind: str
    snapshot: dict[str, Any] | None
    """``before`` of the first entry of this episode: the state the change found."""
    written: list[dict[str, Any] | None] = field(default_factory=list)
    """Every state it journalled writing in this episode (empty: its kind does not)."""

    @property
    def name(self) -> str:
        """The last part of the id (a provider, a release, ``<type>/<name>`` of an rrset)."""
        return self.change_id.split("/", 2)[2] if self.change_id.count("/") >= 2 else ""


@dataclass
class UndoContext:
    """What :meth:`Change.inverse` may read; observations are made once per rollback plan."""

    engine: Engine
    force: bool
    refused: list[str] = field(default_factory=list)
    """Undoing these needs ``--force`` (or a hand): the plan is refused, listing them."""
    notes: list[str] = field(default_factory=list)
    _seen: dict[str, Any] = field(default_factory=dict)

    async def once(self, key: str, observe: Callable[[], Awaitable[Any]]) -> Any:
        """``observe()`` the first time *key* is asked for, its answer after that."""
        if key not in self._seen:
            self._seen[key] = await observe()
        return self._seen[key]


class Change(BaseModel, abc.ABC):
    """One thing apply will do, with why, and what it looks like before and after."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    KIND: ClassVar[str]
    """The value of ``kind``: the kind's name in ids, plans and journals."""
    JOURNAL_WRITTEN: ClassVar[bool] = False
    """Journal what it writes (``after``): rollback leaves alone what someone changed since."""
    UNDO_FIRST: ClassVar[bool] = False
    """Rolled back before the other changes of its region (clients leave first)."""
    IRREVERSIBLE: ClassVar[str] = ""
    """Why rollback cannot undo this kind, for kinds that do not override :meth:`inverse`."""

    id: str
    """Stable identity: ``<region>/<kind>/<name>``; the journal keys progress by it."""
    region: str
    """The primary's host name or a region name."""
    kind: str
    """The kind's name (each kind narrows it to its own literal: the plan's discriminator)."""
    action: Action
    target: str
    """Human name of the object, e.g. ``helm release coder-satellite in ns coder-satellite``."""
    reason: str
    before: BaseModel | None = None
    after: BaseModel | None = None
    diff: str = ""
    """Unified diff of values (sensitive values already replaced)."""
    needs_force: bool = False
    """Deletions and other destructive steps apply only with ``--force``."""
    depends_on: tuple[str, ...] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        default = cls.model_fields["kind"].default
        if isinstance(default, str):
            cls.KIND = default

    def summary(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """The plan's line for this change: action, target and why."""
        return f"{self.action.value} {self.target}: {self.reason}"

    def snapshot(self) -> dict[str, Any] | None:
        """``before`` as the journal keeps it (rollback restores or compares it)."""
        return None if self.before is None else self.before.model_dump(mode="json")

    def written(self) -> dict[str, Any] | None:
        """``after`` as the journal keeps it, for kinds that journal what they write."""
        return None if self.after is None else self.after.model_dump(mode="json")

    @abc.abstractmethod
    async def act(self, ctx: ApplyContext) -> str:
        """Carry the change out; a one-line result for the journal. Idempotent."""

    def verify(self, ctx: ApplyContext) -> Gate | None:
        """The gate the wave waits for after this change; ``None``: none of its own."""
        return None

    @classmethod
    async def inverse(cls, done: Done, ctx: UndoContext) -> Change | Irreversible | None:
        """The change that undoes *done* now, ``None`` when nothing is left to undo; by
        default :class:`Irreversible` with the kind's :attr:`IRREVERSIBLE` reason."""
        return Irreversible(cls.IRREVERSIBLE or f"rollback cannot undo a {cls.KIND} change")

    @classmethod
    @abc.abstractmethod
    def guide(cls) -> Guide:
        """What people on call read about this kind in a runbook."""


class Kinds:
    """The change kinds a process knows, listed once; reads changes back from JSON."""

    def __init__(self, classes: Iterable[type[Change]]) -> None:
        self.classes: tuple[type[Change], ...] = tuple(classes)
        self._by_name = {cls.KIND: cls for cls in self.classes}
        if len(self._by_name) != len(self.classes):
            raise ValueError("two change kinds share a name")
        union: Any = Union[self.classes]  # noqa: UP007 - built from a runtime list
        self._adapter: TypeAdapter[Change] = TypeAdapter(
            Annotated[union, Field(discriminator="kind")]
        )

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def of(self, name: str) -> type[Change] | None:
        return self._by_name.get(name)

    @property
    def names(self) -> Sequence[str]:
        return tuple(self._by_name)

    def with_kinds(self, *extra: type[Change]) -> Kinds:
        return Kinds((*self.classes, *extra))

    def parse(self, data: Any) -> Change:
        """A change from its JSON form (a ``Change`` instance is returned as it is)."""
        if isinstance(data, Change):
            return data
        return self._adapter.validate_python(data)
