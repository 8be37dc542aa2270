"""Step 6 (DNS) of the migration's plan, the journal reading of rollback and status."""

from __future__ import annotations

from typing import Any

from coder_migrate.dns.plan import KIND as KIND_DNS
from coder_migrate.dns.rrset_change import DnsRRSetChange
from coder_migrate.engine.journal import JournalEntry, Phase, Written
from coder_migrate.engine.plan import Action, Change
from coder_migrate.inventory import Topology
from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION, ROLLBACK
from coder_migrate.migrations.v1_20_to_v1_21.dns_check import DnsCheckChange
from coder_migrate.migrations.v1_20_to_v1_21.plan import migration_waves
from coder_migrate.migrations.v1_20_to_v1_21.rebuild import WorkspaceRebuildChange
from coder_migrate.migrations.v1_20_to_v1_21.retain import RetainReleaseChange
from coder_migrate.migrations.v1_20_to_v1_21.rollback import rollback_candidates
from coder_migrate.migrations.v1_20_to_v1_21.status import next_from_journal
from tests.unit.test_engine_deploy import deployed_world, empty_world
from tests.unit.test_migration_plan import changes_of, kinds, providers, v1, workspaces

KIND_DNS_CHECK = DnsCheckChange.KIND
KIND_REBUILD = WorkspaceRebuildChange.KIND
KIND_RETAIN = RetainReleaseChange.KIND

__all__ = ["v1"]  # the fixture, shared with test_migration_plan


def dns_change(region: str, name: str, action: Action = Action.UPDATE) -> Change:
    return DnsRRSetChange(id=f"{region}/{KIND_DNS}/A/{name}", region=region,
                          action=action, target=f"A {name}", reason="test")


def test_region_dns_goes_between_rebuild_and_retain_and_shared_names_last(v1: Topology) -> None:
    dns = [dns_change(r.name, f"coder-{r.name}.example.test") for r in v1.regions]
    dns.append(dns_change("primary", "coder.example.test"))
    dns.append(dns_change("eu-west", "kept.example.test", Action.KEEP))
    waves, _ = migration_waves(v1, empty_world(v1), providers(v1), workspaces(v1),
                               dns_changes=dns, dns_checked=set())

    assert [w.name for w in waves] == ["canary us-east", "regions", "dns"]
    changes = changes_of(waves)
    for region in v1.regions:
        tail = [c.kind for c in changes
                if c.region == region.name and c.action is not Action.KEEP][-4:]
        assert tail[0] == KIND_REBUILD and tail[-1] == KIND_RETAIN, region.name
        assert KIND_DNS in tail and tail[-2] == KIND_DNS_CHECK
    by_id = {c.id: c for c in changes}
    check = by_id["eu-west/DnsCheck/answers"]
    assert check.depends_on == ("eu-west/DnsRRSet/A/coder-eu-west.example.test",)
    assert check.written() == {"regions": ["eu-west"], "shared": False}
    retain = next(c for c in changes if c.region == "eu-west" and c.kind == KIND_RETAIN)
    assert retain.depends_on == (check.id,), "a kept rrset is never a dependency"
    assert kinds(changes, "eu-west").count(KIND_DNS) == 2  # the kept one is shown
    final = waves[-1]
    assert [c.kind for c in final.changes] == [KIND_DNS, KIND_DNS_CHECK]
    assert final.changes[1].written() == {"regions": [r.name for r in v1.regions], "shared": True}


def test_dns_check_is_planned_until_the_journal_has_one(v1: Topology) -> None:
    everywhere = {r.name for r in v1.regions} | {"primary"}
    waves, _ = migration_waves(
        v1, deployed_world(v1), providers(v1, net_v2=True, retained=True),
        workspaces(v1, rebuilt=True), dns_checked=everywhere - {"us-west"},
    )
    assert [(c.region, c.kind) for c in changes_of(waves)] == [("us-west", KIND_DNS_CHECK)]
    done, _ = migration_waves(
        v1, deployed_world(v1), providers(v1, net_v2=True, retained=True),
        workspaces(v1, rebuilt=True), dns_checked=everywhere,
    )
    assert done == []


def test_limit_leaves_the_shared_names_alone(v1: Topology) -> None:
    dns = [dns_change("eu-west", "coder-eu-west.example.test"),
           dns_change("primary", "coder.example.test")]
    waves, _ = migration_waves(v1, empty_world(v1), providers(v1), workspaces(v1),
                               limit=["eu-west"], dns_changes=dns, dns_checked=set())
    assert [w.name for w in waves] == ["regions"]
    assert {c.region for c in changes_of(waves)} == {"eu-west"}


def entry(operation: str, change_id: str, phase: Phase,
          snapshot: dict[str, Any] | None = None) -> JournalEntry:
    return JournalEntry(run="r", operation=operation, change_id=change_id,
                        region=change_id.split("/")[0], phase=phase, at="t", by="me",
                        snapshot=snapshot)


def test_rollback_undoes_what_the_migration_found_since_the_last_rollback() -> None:
    dns_id = "eu-west/DnsRRSet/A/coder-eu-west.example.test"
    history = [
        entry(MIGRATION, dns_id, "started", {"first": 1}),
        entry(MIGRATION, dns_id, "failed", {"first": 1}),
        entry(MIGRATION, dns_id, "started", {"second": 2}),
        entry(MIGRATION, dns_id, "done", {"second": 2}),
        entry(MIGRATION, "eu-west/WorkspaceRebuild/ws", "done"),
    ]
    found = rollback_candidates(history)
    assert [(d.change_id, d.kind, d.snapshot) for d in found] == [
        (dns_id, KIND_DNS, {"first": 1}),  # what was there before the migration touched it
        ("eu-west/WorkspaceRebuild/ws", KIND_REBUILD, None),
    ]
    rolled = [*history, entry(ROLLBACK, dns_id, "started"), entry(ROLLBACK, dns_id, "done")]
    assert [d.change_id for d in rollback_candidates(rolled)] == [
        "eu-west/WorkspaceRebuild/ws"]
    # A later migration of it is a new episode with its own snapshot.
    again = [*rolled, entry(MIGRATION, dns_id, "done", {"third": 3})]
    assert rollback_candidates(again)[-1].snapshot == {"third": 3}


def test_status_next_step_from_the_journal_follows_the_step_order() -> None:
    assert next_from_journal("") == "Namespace"
    assert next_from_journal("WorkspaceRebuild") == KIND_DNS
    assert next_from_journal(KIND_DNS_CHECK) == KIND_RETAIN
    assert next_from_journal(KIND_RETAIN) == "nothing (migrated)"


def test_rollback_candidates_keep_every_state_the_migration_wrote_in_the_episode() -> None:
    dns_id = "eu-west/DnsRRSet/A/coder-eu-west.example.test"

    def wrote(operation: str, phase: Phase, state: dict[str, Any] | None) -> JournalEntry:
        return entry(operation, dns_id, phase, {"found": 0}).model_copy(
            update={"written": Written(state=state)})

    history = [
        wrote(MIGRATION, "started", {"ttl": 1}),
        wrote(MIGRATION, "done", {"ttl": 1}),
        wrote(MIGRATION, "started", None),  # a later run deleted it
    ]
    (found,) = rollback_candidates(history)
    assert found.written == [{"ttl": 1}, None]
    # Entries from before the journal held after-states: nothing to compare with.
    assert rollback_candidates([entry(MIGRATION, dns_id, "done")])[0].written == []
    # A finished rollback ends the episode; its own writes are not the migration's.
    rolled = [*history, wrote(ROLLBACK, "done", {"found": 0}), wrote(MIGRATION, "done", {"x": 2})]
    assert rollback_candidates(rolled)[0].written == [{"x": 2}]
