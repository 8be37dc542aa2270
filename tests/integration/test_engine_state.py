"""The engine's state in the primary cluster: kube adapter, journal and apply lock, on the lab."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

import pytest

from coder_migrate.engine import lock as lock_module
from coder_migrate.engine.journal import Journal
from coder_migrate.engine.lock import LEASE_NAME, apply_lock, holder_identity
from coder_migrate.errors import KubeError, LockHeld
from coder_migrate.providers.kube import KubeCluster
from tests.fixtures.lab import LabHandle

pytestmark = pytest.mark.integration


def _cluster(lab: LabHandle) -> KubeCluster:
    return KubeCluster("lab-primary", str(lab.kubeconfig))


def _namespace() -> str:
    return f"cm-test-{uuid.uuid4().hex[:8]}"


def test_secrets_are_written_read_and_deleted_without_echoing_values(lab: LabHandle) -> None:
    async def scenario() -> None:
        cluster, namespace = _cluster(lab), _namespace()
        assert await cluster.ensure_namespace(namespace) is True
        assert await cluster.ensure_namespace(namespace) is False
        assert await cluster.namespace_exists(namespace)
        assert await cluster.secret_keys(namespace, "proxy-token") is None
        # Values shaped like secrets: what the adapter reads stays registered for scrubbing.
        first, second = "proxy-token-first-3b9d", "proxy-token-second-7e21"
        await cluster.put_secret(namespace, "proxy-token", {"token": first})
        await cluster.put_secret(namespace, "proxy-token", {"token": second})
        assert await cluster.secret_keys(namespace, "proxy-token") == {"token"}
        assert await cluster.secret_value(namespace, "proxy-token", "token") == second
        assert await cluster.delete_secret(namespace, "proxy-token") is True
        assert await cluster.delete_secret(namespace, "proxy-token") is False
        assert await cluster.can_i("create", "secrets", namespace)

    asyncio.run(scenario())


def test_unknown_context_is_one_clear_error(lab: LabHandle) -> None:
    cluster = KubeCluster("lab-nowhere", str(lab.kubeconfig))
    with pytest.raises(KubeError, match="kube context 'lab-nowhere' cannot be used from"):
        asyncio.run(cluster.namespace_exists("default"))


def test_journal_appends_from_concurrent_writers(lab: LabHandle) -> None:
    async def scenario() -> None:
        cluster, namespace = _cluster(lab), _namespace()
        await cluster.ensure_namespace(namespace)
        journal = Journal(cluster, namespace)
        await asyncio.gather(*(
            journal.record(run="r1", operation="deploy", change_id=f"eu-west/X/{i}",
                           region="eu-west", phase="started", by="test")
            for i in range(6)
        ))
        await journal.record(run="r1", operation="deploy", change_id="eu-west/X/0",
                             region="eu-west", phase="done", by="test",
                             snapshot={"records": ["127.0.1.2"]})
        entries = await journal.entries()
        assert len(entries) == 7
        latest = Journal.latest(entries)
        assert latest["eu-west/X/0"].phase == "done"
        assert latest["eu-west/X/0"].snapshot == {"records": ["127.0.1.2"]}
        assert {e.change_id for e in entries} == {f"eu-west/X/{i}" for i in range(6)}

    asyncio.run(scenario())


def test_journal_archives_old_entries_instead_of_outgrowing_its_config_map(
    lab: LabHandle,
) -> None:
    async def scenario() -> None:
        cluster, namespace = _cluster(lab), _namespace()
        await cluster.ensure_namespace(namespace)
        journal = Journal(cluster, namespace, max_bytes=4096)
        for i in range(60):
            await journal.record(run=f"r{i // 10}", operation="deploy", change_id=f"x/Y/{i}",
                                 region="x", phase="done", by="test", detail="d" * 40)
        main = await cluster.read_config_map(namespace, journal.name)
        assert main is not None and len(main[0]["entries.jsonl"].encode()) <= 4096
        assert int(main[0]["archives"]) >= 2
        history = await journal.history()
        assert [e.change_id for e in history] == [f"x/Y/{i}" for i in range(60)]
        recent = await journal.entries()
        assert recent and recent[-1].change_id == "x/Y/59" and len(recent) < 60

    asyncio.run(scenario())


def test_lock_refuses_a_second_holder_and_expires_after_a_crash(
    lab: LabHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        cluster, namespace = _cluster(lab), _namespace()
        async with apply_lock(cluster, namespace, "apply", identity="first@a:1"):
            with pytest.raises(LockHeld, match="held by first@a:1"):
                async with apply_lock(cluster, namespace, "apply", identity="second@b:2"):
                    pass
        # Released at the end: the next holder gets it at once.
        async with apply_lock(cluster, namespace, "apply", identity="second@b:2"):
            pass
        assert await cluster.read_lease(namespace, LEASE_NAME) is None

        # A holder killed without releasing: the lease expires on its own.
        monkeypatch.setattr(lock_module, "LEASE_SECONDS", 1)
        await lock_module._acquire(cluster, namespace, "crashed@c:3", "apply")
        with pytest.raises(LockHeld, match="crashed@c:3"):
            await lock_module._acquire(cluster, namespace, "third@d:4", "apply")
        await asyncio.sleep(2.5)
        async with apply_lock(cluster, namespace, "apply", identity="third@d:4"):
            lease = await cluster.read_lease(namespace, LEASE_NAME)
            assert lease is not None and lease.holder == "third@d:4"

    asyncio.run(scenario())


def test_lock_of_a_dead_process_of_this_machine_is_taken_over_at_once(lab: LabHandle) -> None:
    async def scenario() -> None:
        cluster, namespace = _cluster(lab), _namespace()
        this_machine = holder_identity().rpartition(":")[0]
        dead = subprocess.Popen(["true"])  # gone once waited for: its pid runs nothing
        dead.wait()
        await cluster.ensure_namespace(namespace)
        await lock_module._acquire(cluster, namespace, f"{this_machine}:{dead.pid}", "apply")
        async with apply_lock(cluster, namespace, "apply", identity="next@e:5"):
            lease = await cluster.read_lease(namespace, LEASE_NAME)
            assert lease is not None and lease.holder == "next@e:5"
        # A holder of this machine that still runs keeps it until it expires.
        await lock_module._acquire(cluster, namespace, f"{this_machine}:{os.getpid()}", "apply")
        with pytest.raises(LockHeld, match=f"{this_machine}:{os.getpid()}"):
            await lock_module._acquire(cluster, namespace, "next@e:5", "apply")

    asyncio.run(scenario())
