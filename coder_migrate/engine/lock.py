"""The apply lock: a coordination.k8s.io Lease in the primary cluster.

One apply (or rollback) at a time per environment, across operators and machines. The lease
is renewed while the holder runs and expires on its own when the holder dies (SIGKILL, lost
laptop), so a crash never needs a manual unlock; ``LockHeld`` says who holds it and when it
expires. A holder that was a process of this very machine (same user, host, boot and PID
namespace, from the lease's ``coder-migrate/boot-id`` annotation) and no longer runs is known
dead: its lease is taken over at once, so a re-run after a crash does not wait for expiry.

A lock can be lost while held: the lease taken over by another holder (after a pause longer
than its duration, or by hand), deleted, or not renewable until it expired. The renewer
notices and :meth:`ApplyLock.check` then raises :class:`LockLost` ("lock lost to <holder>"),
which apply calls between changes: it stops at the next change boundary, never in the middle
of one, so the journal stays consistent.
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
from types import TracebackType

from coder_migrate.errors import KubeError, LockHeld, LockLost
from coder_migrate.poll import attempts
from coder_migrate.providers.kube import KubeCluster, Lease

__all__ = ["LEASE_NAME", "ApplyLock", "apply_lock", "holder_identity"]

LEASE_NAME = "coder-migrate-lock"
LEASE_SECONDS = 30
LOCK_RETRY_SECONDS = 2.0
"""Pause between attempts while waiting (``--lock-wait``) for another holder."""
_BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
_BOOT_ID_ANNOTATION = "coder-migrate/boot-id"
_OPERATION_ANNOTATION = "coder-migrate/operation"


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


def _holder_gone(lease: Lease) -> bool:
    """The holder was a process of this machine, user and boot, and it no longer runs."""
    who, _, pid = lease.holder.rpartition(":")
    boot = lease.annotations.get(_BOOT_ID_ANNOTATION, "")
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


def _expires(lease: Lease) -> dt.datetime | None:
    renewed = lease.renewed or lease.acquired
    if renewed is None or not lease.holder:
        return None
    return renewed + dt.timedelta(seconds=lease.duration_seconds or LEASE_SECONDS)


def _lease(identity: str, operation: str, version: str | None, acquired: dt.datetime) -> Lease:
    return Lease(
        name=LEASE_NAME, holder=identity, duration_seconds=LEASE_SECONDS, acquired=acquired,
        renewed=_now(),
        annotations={_OPERATION_ANNOTATION: operation, _BOOT_ID_ANNOTATION: _boot_id()},
        resource_version=version,
    )


async def _acquire(cluster: KubeCluster, namespace: str, identity: str, operation: str) -> None:
    now = _now()
    lease = await cluster.read_lease(namespace, LEASE_NAME)
    if lease is None:
        if await cluster.create_lease(namespace, _lease(identity, operation, None, now)):
            return
        lease = await cluster.read_lease(namespace, LEASE_NAME)
    if lease is not None and lease.holder != identity:
        expires = _expires(lease)
        if expires is not None and expires >= now and not _holder_gone(lease):
            what = lease.annotations.get(_OPERATION_ANNOTATION, "an operation")
            since = f"{lease.acquired:%Y-%m-%d %H:%M:%S}Z" if lease.acquired else "an unknown time"
            raise LockHeld(
                f"another {what} holds the lock (Lease {namespace}/{LEASE_NAME} in context "
                f"{cluster.context}, held by {lease.holder} since {since}); it expires at "
                f"{expires:%H:%M:%S}Z unless its holder is still running"
            )
    version = lease.resource_version if lease is not None else None
    if not await cluster.replace_lease(namespace, _lease(identity, operation, version, now)):
        raise LockHeld(f"another operation took the lock {namespace}/{LEASE_NAME} just now")


class ApplyLock:
    """Hold the lock for the body of ``async with``; renew it; release it at the end.

    *wait* seconds are spent retrying while another holder has it. *renew_every* is how
    often the lease is renewed and checked (a third of its duration).
    """

    def __init__(
        self, cluster: KubeCluster, namespace: str, operation: str, *,
        identity: str | None = None, wait: float = 0.0, renew_every: float = LEASE_SECONDS / 3,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.operation = operation
        self.identity = identity or holder_identity()
        self.wait = wait
        self.renew_every = renew_every
        self.lost_to: str | None = None
        """Who holds the lease now that it is not ours (set by the renewer)."""
        self._acquired = _now()
        self._renewer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ApplyLock:
        await self.cluster.ensure_namespace(self.namespace)
        async for attempt in attempts(self.wait, interval=LOCK_RETRY_SECONDS):
            try:
                await _acquire(self.cluster, self.namespace, self.identity, self.operation)
                break
            except LockHeld:
                if attempt.last:
                    raise
        self._acquired = _now()
        self._renewer = asyncio.create_task(self._renew(), name="coder-migrate-lock-renewal")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self.lost_to is not None:
            return  # someone else's now: never delete another holder's lease
        lease = await self.cluster.read_lease(self.namespace, LEASE_NAME)
        if lease is not None and lease.holder == self.identity:
            await self.cluster.delete_lease(self.namespace, LEASE_NAME)

    def check(self) -> None:
        """Raise :class:`LockLost` once the lease is no longer ours."""
        if self.lost_to is not None:
            raise LockLost(
                f"lock lost to {self.lost_to} (Lease {self.namespace}/{LEASE_NAME} in context "
                f"{self.cluster.context}); stopped before the next change"
            )

    async def _renew(self) -> None:
        """Renew until cancelled; on losing the lease, record to whom and stop renewing."""
        last_renewed = _now()
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                lease = await self.cluster.read_lease(self.namespace, LEASE_NAME)
                if lease is None or lease.holder != self.identity:
                    self.lost_to = lease.holder if lease is not None and lease.holder else (
                        "nobody (the Lease was deleted)")
                    return
                renewed = _lease(self.identity, self.operation, lease.resource_version,
                                 self._acquired)
                if await self.cluster.replace_lease(self.namespace, renewed):
                    last_renewed = _now()
                    continue
            except KubeError:
                pass  # the cluster did not answer: retried at the next renewal
            if _now() - last_renewed > dt.timedelta(seconds=LEASE_SECONDS):
                self.lost_to = "nobody (not renewed before it expired)"
                return


@contextlib.asynccontextmanager
async def apply_lock(
    cluster: KubeCluster, namespace: str, operation: str, *, identity: str | None = None,
    wait: float = 0.0,
) -> AsyncIterator[ApplyLock]:
    """:class:`ApplyLock` as a context manager function."""
    async with ApplyLock(cluster, namespace, operation, identity=identity, wait=wait) as lock:
        yield lock
