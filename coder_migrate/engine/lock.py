"""The apply lock: a coordination.k8s.io Lease in the primary cluster.

One apply (or rollback) at a time per environment, across operators and machines. The lease
is renewed while the holder runs and expires on its own when the holder dies (SIGKILL, lost
laptop), so a crash never needs a manual unlock; ``LockHeld`` says who holds it and when it
expires. A holder that was a process of this very machine (same user, host, boot and PID
namespace, from the lease's ``coder-migrate/boot-id`` annotation) and no longer runs is known
dead: its lease is taken over at once, so a re-run after a crash does not wait for expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kubernetes import client

from coder_migrate.errors import LockHeld
from coder_migrate.providers.kube import KubeCluster

__all__ = ["LEASE_NAME", "apply_lock", "holder_identity"]

LEASE_NAME = "coder-migrate-lock"
LEASE_SECONDS = 30
_BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
_BOOT_ID_ANNOTATION = "coder-migrate/boot-id"


def holder_identity() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}"


def _boot_id() -> str:
    """This machine's boot and PID namespace (Linux); "" where there is none to read.

    The namespace matters: containers on one kernel share the boot id, but a PID is only
    meaningful inside its own namespace.
    """
    try:
        return f"{_BOOT_ID_FILE.read_text().strip()}/{Path('/proc/self/ns/pid').readlink()}"
    except OSError:
        return ""


def _holder_gone(lease: Any) -> bool:
    """The holder was a process of this machine, user and boot, and it no longer runs."""
    who, _, pid = (lease.spec.holder_identity or "").rpartition(":")
    boot = (lease.metadata.annotations or {}).get(_BOOT_ID_ANNOTATION, "")
    if not boot or boot != _boot_id() or not pid.isdigit():
        return False
    if who != f"{getpass.getuser()}@{socket.gethostname()}":
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it runs, as another user
    return False


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _expired(lease: Any, now: dt.datetime) -> bool:
    spec = lease.spec
    renewed = spec.renew_time or spec.acquire_time
    if renewed is None or not spec.holder_identity:
        return True
    duration = dt.timedelta(seconds=spec.lease_duration_seconds or LEASE_SECONDS)
    return bool(renewed + duration < now)


def _body(identity: str, operation: str, version: str | None, acquired: dt.datetime) -> Any:
    now = _now()
    return client.V1Lease(
        metadata=client.V1ObjectMeta(
            name=LEASE_NAME,
            resource_version=version,
            annotations={"coder-migrate/operation": operation,
                         _BOOT_ID_ANNOTATION: _boot_id()},
        ),
        spec=client.V1LeaseSpec(
            holder_identity=identity,
            lease_duration_seconds=LEASE_SECONDS,
            acquire_time=acquired,
            renew_time=now,
        ),
    )


async def _acquire(cluster: KubeCluster, namespace: str, identity: str, operation: str) -> None:
    now = _now()
    lease = await cluster.read_lease(namespace, LEASE_NAME)
    if lease is None:
        if await cluster.create_lease(namespace, _body(identity, operation, None, now)):
            return
        lease = await cluster.read_lease(namespace, LEASE_NAME)
    if (lease is not None and lease.spec.holder_identity != identity
            and not _expired(lease, now) and not _holder_gone(lease)):
        spec = lease.spec
        renewed = spec.renew_time or spec.acquire_time
        expires = renewed + dt.timedelta(seconds=spec.lease_duration_seconds or LEASE_SECONDS)
        what = (lease.metadata.annotations or {}).get("coder-migrate/operation", "an operation")
        raise LockHeld(
            f"another {what} holds the lock (Lease {namespace}/{LEASE_NAME} in context "
            f"{cluster.context}, held by {spec.holder_identity} since "
            f"{spec.acquire_time:%Y-%m-%d %H:%M:%S}Z); it expires at {expires:%H:%M:%S}Z "
            "unless its holder is still running"
        )
    version = lease.metadata.resource_version if lease is not None else None
    if not await cluster.replace_lease(
        namespace, LEASE_NAME, _body(identity, operation, version, now)
    ):
        raise LockHeld(f"another operation took the lock {namespace}/{LEASE_NAME} just now")


@contextlib.asynccontextmanager
async def apply_lock(
    cluster: KubeCluster, namespace: str, operation: str, *, identity: str | None = None
) -> AsyncIterator[str]:
    """Hold the lock for the body; renew it in the background; release it at the end."""
    identity = identity or holder_identity()
    await cluster.ensure_namespace(namespace)
    await _acquire(cluster, namespace, identity, operation)
    acquired = _now()

    async def renew() -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            lease = await cluster.read_lease(namespace, LEASE_NAME)
            if lease is None or lease.spec.holder_identity != identity:
                return
            await cluster.replace_lease(
                namespace, LEASE_NAME,
                _body(identity, operation, lease.metadata.resource_version, acquired),
            )

    renewer = asyncio.create_task(renew(), name="coder-migrate-lock-renewal")
    try:
        yield identity
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        lease = await cluster.read_lease(namespace, LEASE_NAME)
        if lease is not None and lease.spec.holder_identity == identity:
            await cluster.delete_lease(namespace, LEASE_NAME)
