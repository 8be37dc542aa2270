"""A new change kind is one file: this one. Defined here, it appears in a plan (and its JSON
file), is applied by the runner (journal, gate), undone by rollback and described in a
runbook, with nothing else in the project touched but the registry it is added to.

It also holds the rule that keeps it so: no code in coder_migrate/ dispatches on a kind's
name (``.kind ==``); behaviour lives in the kind's class."""

from __future__ import annotations

import asyncio
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from coder_migrate.engine.apply import ApplyOptions, apply_operation
from coder_migrate.engine.change import (
    Action,
    ApplyContext,
    Change,
    Done,
    Gate,
    UndoContext,
    change_id,
)
from coder_migrate.engine.guide import Check, Commands, Guide
from coder_migrate.engine.journal import Journal
from coder_migrate.engine.plan import Plan, Wave
from coder_migrate.engine.site import plan_text
from coder_migrate.inventory import Region, load_topology
from coder_migrate.kinds import KINDS
from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION
from coder_migrate.migrations.v1_20_to_v1_21.rollback import compute_rollback_plan
from coder_migrate.runbook.steps import steps_of
from tests.fakes import FakeEngine
from tests.helpers import EXAMPLE_INVENTORY, REPO

SAID: list[str] = []


class Words(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str


class GreetingChange(Change):
    """Say hello to a region (and take it back on rollback)."""

    kind: Literal["Greeting"] = "Greeting"
    after: Words | None = None

    async def act(self, ctx: ApplyContext) -> str:
        said = self.after.text if self.after else "(unsaid)"
        SAID.append(f"{self.region}: {said}")
        return f"said {said!r} to {self.region}"

    def verify(self, ctx: ApplyContext) -> Gate | None:
        async def heard() -> str:
            return "" if SAID else "nobody heard it"

        return Gate(key=f"greeting/{self.region}", site=self.region, check=heard)

    @classmethod
    async def inverse(cls, done: Done, ctx: UndoContext) -> Change | None:
        return cls(id=done.change_id, region=done.region, action=Action.DELETE,
                   target=f"greeting of {done.region}", reason="take the greeting back")

    @classmethod
    def guide(cls) -> Guide:
        return Guide(title="Greet the region", rollback="`migrate rollback` takes it back.",
                     checks=lambda c, region, changes: [
                         Check(c.cli("status", limit=region.name), "the region smiles")])


KNOWN = KINDS.with_kinds(GreetingChange)


def greeting(region: str) -> GreetingChange:
    return GreetingChange(id=change_id(region, "Greeting", "hello"), region=region,
                          action=Action.ACT, target=f"greeting of {region}",
                          reason="be polite", after=Words(text="hello"))


def test_a_new_kind_is_planned_applied_rolled_back_and_in_the_runbook() -> None:
    topology = load_topology(EXAMPLE_INVENTORY)
    engine = FakeEngine(topology)
    plan = Plan.build(inventory=topology.source, operation=MIGRATION,
                      waves=[Wave(name="regions", regions=("eu-west",),
                                  changes=(greeting("eu-west"),))])
    # plan: its JSON file reads back as the same plan, with the same checksum
    again = Plan.from_json(plan.to_json(), kinds=KNOWN)
    assert again == plan and isinstance(next(again.changes), GreetingChange)
    assert "act greeting of eu-west: be polite" in plan_text(plan)

    # apply: through the one runner, journalled, its gate met
    async def compute() -> Plan:
        return plan

    _, report = asyncio.run(apply_operation(
        engine, MIGRATION, compute, ApplyOptions(gate_timeout=5.0)))  # type: ignore[arg-type]
    assert SAID == ["eu-west: hello"] and report.done == [greeting("eu-west").id]
    journal = Journal(engine.primary_kube, engine.state_namespace)  # type: ignore[arg-type]
    assert [(e.change_id, e.phase) for e in asyncio.run(journal.entries())] == [
        ("eu-west/Greeting/hello", "started"), ("eu-west/Greeting/hello", "done")]

    # rollback: the journal entry finds its kind, whose inverse undoes it
    undo = asyncio.run(compute_rollback_plan(engine, ["eu-west"], kinds=KNOWN))  # type: ignore[arg-type]
    assert [(c.kind, c.action, c.reason) for c in undo.effective_changes] == [
        ("Greeting", Action.DELETE, "take the greeting back")]

    # runbook: the kind's own words
    region = topology.region("eu-west")
    (step,) = steps_of(Commands(inventory="inventories/example", topology=topology), region,
                       [greeting("eu-west")])
    assert step.title == "Greet the region" and step.rollback.startswith("`migrate rollback`")
    assert step.checks[0].expect == "the region smiles"
    assert isinstance(region, Region)


_DISPATCH = re.compile(r"\.kind\s*==|==\s*\w+\.kind\b")
_OTHER_KINDS = ("lab", "proxy")
"""Packages whose ``kind`` is something else: an emulator fault rule, a route decision."""


def test_no_code_dispatches_on_a_kind_name() -> None:
    """Apply, rollback, status and the runbook ask the change's class, never its name."""
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted((REPO / "coder_migrate").rglob("*.py"))
        if path.relative_to(REPO / "coder_migrate").parts[0] not in _OTHER_KINDS
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if _DISPATCH.search(line)
    ]
    assert found == []
