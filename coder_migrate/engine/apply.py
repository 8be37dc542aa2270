"""Apply: per change, journal -> act -> journal; a health gate closes every wave.

Regions of a wave run concurrently, the changes of one region in plan order. Every act is
idempotent against what is there *now* (a re-run after a crash finds a half-done change and
finishes it): a registration already in place is not posted again, a proxy that exists gets
its token regenerated instead of a twin, a release stuck ``pending-*`` by a killed helm run
is recovered first. The first failure stops the wave; nothing of a later wave starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from coder_migrate.dns.plan import KIND as KIND_DNS
from coder_migrate.dns.plan import apply_dns_changes, open_adapter
from coder_migrate.dns.verify import (
    DEFAULT_VERIFY_TIMEOUT,
    VERIFIED_OPERATION,
    raise_unless_verified,
)
from coder_migrate.engine.deploy import (
    KIND_NAMESPACE,
    KIND_PROXY,
    KIND_PROXY_TOKEN,
    KIND_RELEASE,
    KIND_SATELLITE,
    protected_releases,
)
from coder_migrate.engine.journal import Journal, Phase, Written
from coder_migrate.engine.lock import apply_lock, holder_identity
from coder_migrate.engine.plan import Action, Change, Plan, Wave
from coder_migrate.engine.values import release_values
from coder_migrate.engine.world import CONCURRENCY, Engine, ManagedSite, probe_url
from coder_migrate.errors import (
    ApplyError,
    CoderAPIError,
    CoderMigrateError,
    KubeError,
    LockHeld,
    PlanError,
    redact,
)
from coder_migrate.inventory import Primary, Region
from coder_migrate.providers.coder import CoderV1Client, SatelliteKey
from coder_migrate.providers.coder import satellite_key as keys
from coder_migrate.providers.coder.health import health_url
from coder_migrate.providers.helm import chart_source

__all__ = [
    "ApplyOptions",
    "ApplyReport",
    "Executor",
    "Progress",
    "apply_plan",
    "health_gate",
    "register_executor",
]

Progress = Callable[[str, str, str], None]
"""``(region, phase, text)``: phase is started, done, failed, gate or gate-ok."""

Executor = Callable[["Engine", Change], Awaitable[str]]
"""Carries out one change of a kind other modules plan (e.g. the migration's steps); returns
a one-line result for the journal. Must be idempotent against what is there now."""

EXECUTORS: dict[str, Executor] = {}
WRITTEN_JOURNALLED: set[str] = {KIND_DNS}
"""Kinds whose journal entries carry what they write (:class:`Written`): a rollback
compares it with what is there then, and leaves alone what someone else changed since."""


def register_executor(kind: str, executor: Executor, *, journal_written: bool = False) -> None:
    """Let a planner outside the deploy engine (a migration) add the kinds it plans;
    *journal_written* journals each change's ``after`` as what it writes."""
    EXECUTORS[kind] = executor
    if journal_written:
        WRITTEN_JOURNALLED.add(kind)


GATE_TIMEOUT = 120.0
GATE_POLL = 1.0


@dataclass(frozen=True)
class ApplyOptions:
    force: bool = False
    gate_timeout: float = GATE_TIMEOUT
    lock_wait: float = 0.0
    """Seconds to wait for a lock someone else holds (the Ansible roles wait; the CLI not)."""
    dns_verify_timeout: float = DEFAULT_VERIFY_TIMEOUT
    """Seconds the DNS wave's verify step waits for every region's answers to be as planned."""
    progress: Progress | None = None
    reviewed: bool = True
    """The user saw this plan (a plan file, or a preview they confirmed): under the lock it
    must still hold. Without review (``--auto-approve`` and no plan file) the plan computed
    under the lock is applied, so a re-run after a crash does not trip over in-flight
    requests of the dead run."""


@dataclass
class ApplyReport:
    run: str
    done: list[str] = field(default_factory=list)


def _noop(region: str, phase: str, text: str) -> None:
    return None


@contextlib.asynccontextmanager
async def locked(engine: Engine, operation: str, wait: float) -> AsyncIterator[str]:
    """The apply lock, waiting up to *wait* seconds for another holder to finish."""
    deadline = time.monotonic() + wait
    while True:
        try:
            async with apply_lock(engine.primary_kube, engine.state_namespace, operation) as who:
                yield who
                return
        except LockHeld:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(2.0)


async def apply_plan(
    engine: Engine,
    plan: Plan,
    replan: Callable[[], Awaitable[Plan]],
    options: ApplyOptions,
) -> ApplyReport:
    """Take the lock, check the plan still holds, then carry it out wave by wave.

    *replan* recomputes the plan; under the lock it must match *plan* (apart from the state
    namespace the lock itself creates), or someone changed the world in between.
    """
    plan.raise_if_unsafe(force=options.force)
    progress = options.progress or _noop
    report = ApplyReport(run=f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}")
    async with locked(engine, plan.operation, options.lock_wait) as identity:
        fresh = await replan()
        fresh.raise_if_unsafe(force=options.force)
        ignore = f"primary/{KIND_NAMESPACE}/{engine.state_namespace}"
        if options.reviewed and _comparable(fresh, ignore) != _comparable(plan, ignore):
            raise PlanError(
                "the world changed between plan and lock (another operator?): "
                f"{_difference(plan, fresh, ignore)}; plan again"
            )
        journal = Journal(engine.primary_kube, engine.state_namespace)
        runner = _Runner(engine, fresh, journal, report, identity, progress)
        runner.key_timeout = options.gate_timeout
        runner.dns_verify_timeout = options.dns_verify_timeout
        for index, wave in enumerate(fresh.waves):
            try:
                await runner.run_wave(wave)
                await runner.gate(wave, options.gate_timeout)
            except CoderMigrateError as error:
                not_done = [c.id for w in fresh.waves[index:] for c in w.effective
                            if c.id not in report.done]
                raise ApplyError(
                    f"wave {wave.name!r} stopped: {redact(str(error))}",
                    done=list(report.done), not_done=not_done,
                ) from None
    return report


def _difference(planned: Plan, fresh: Plan, ignore: str) -> str:
    def summaries(plan: Plan) -> set[str]:
        return {f"{c.id} ({c.action.value}: {c.reason})" for c in plan.changes if c.id != ignore}

    gone = sorted(summaries(planned) - summaries(fresh))
    new = sorted(summaries(fresh) - summaries(planned))
    parts = [f"no longer planned: {', '.join(gone)}"] if gone else []
    parts += [f"now planned: {', '.join(new)}"] if new else []
    return "; ".join(parts) or "the order or notes of the changes differ"


def _comparable(plan: Plan, ignore: str) -> str:
    waves = [
        Wave(name=w.name, regions=w.regions, changes=tuple(
            c.model_copy(update={"depends_on": tuple(d for d in c.depends_on if d != ignore)})
            for c in w.changes if c.id != ignore
        ))
        for w in plan.waves
    ]
    return Plan.build(
        inventory=plan.inventory, waves=waves, operation=plan.operation, limit=plan.limit,
        notes=plan.notes,
    ).checksum


class _Runner:
    def __init__(
        self, engine: Engine, plan: Plan, journal: Journal, report: ApplyReport, identity: str,
        progress: Progress,
    ) -> None:
        self.engine = engine
        self.topology = engine.topology
        self.plan = plan
        self.journal = journal
        self.report = report
        self.identity = identity or holder_identity()
        self.progress = progress
        self.key_timeout = GATE_TIMEOUT
        """How long a new satellite may take to serve its key (the wave's gate timeout)."""
        self.gate_sem = asyncio.Semaphore(CONCURRENCY)
        self.dns_verify_timeout = DEFAULT_VERIFY_TIMEOUT

    async def run_wave(self, wave: Wave) -> None:
        by_region: dict[str, list[Change]] = defaultdict(list)
        for change in wave.effective:
            by_region[change.region].append(change)
        if wave.name == "dns":
            await self._run_region("dns", [c for cs in by_region.values() for c in cs])
            return
        results = await asyncio.gather(
            *(self._run_region(region, changes) for region, changes in by_region.items()),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        if wave.name == "removals":
            for region in by_region:
                await self.engine.record_site(None, remove=region)

    async def _run_region(self, region: str, changes: Sequence[Change]) -> None:
        async with self.gate_sem:
            for change in changes:
                await self._run_change(change)

    async def _run_change(self, change: Change) -> None:
        written = Written(state=change.after) if change.kind in WRITTEN_JOURNALLED else None

        async def journal(phase: Phase, detail: str) -> None:
            await self.journal.record(
                run=self.report.run, operation=self.plan.operation, change_id=change.id,
                region=change.region, by=self.identity, phase=phase, detail=detail,
                snapshot=change.before, written=written,
            )

        await journal("started", change.summary())
        self.progress(change.region, "started", change.summary())
        try:
            detail = await self._act(change)
        except CoderMigrateError as error:
            message = redact(str(error))
            await journal("failed", message)
            self.progress(change.region, "failed", f"{change.target}: {message}")
            raise
        await journal("done", detail or change.summary())
        self.report.done.append(change.id)
        self.progress(change.region, "done", detail or change.summary())

    # -- acts -------------------------------------------------------------------------------

    def _site(self, name: str) -> Primary | Region:
        if name == "primary":
            return self.topology.primary
        return self.topology.region(name)

    def _managed(self, change: Change) -> ManagedSite:
        if change.region in {r.name for r in self.topology.regions}:
            return ManagedSite.of(self.topology, self.topology.region(change.region))
        for other in self.plan.changes:
            if other.region == change.region and other.kind == KIND_RELEASE and other.before:
                return ManagedSite.model_validate(other.before)
        raise ApplyError(f"{change.region}: no record of where it was deployed")

    async def _act(self, change: Change) -> str:
        if change.kind == KIND_DNS:
            # One zone, one writer: PowerDNS's SQLite backend refuses concurrent writes, and
            # no DNS server gains from regions racing on one zone.
            async with self.engine.dns_writes, open_adapter(self.topology) as adapter:
                acted = await apply_dns_changes(adapter, [change])
            return f"{change.target}: {'applied' if acted else 'already in place'}"
        if change.kind == KIND_NAMESPACE:
            site = self._site(change.region)
            created = await self.engine.site_kube(site).ensure_namespace(site.namespace)
            return f"namespace {site.namespace} {'created' if created else 'already there'}"
        if change.kind == KIND_RELEASE:
            return await self._release(change)
        if change.kind == KIND_SATELLITE:
            return await self._satellite(change)
        if change.kind in (KIND_PROXY, KIND_PROXY_TOKEN):
            return await self._proxy(change)
        executor = EXECUTORS.get(change.kind)
        if executor is not None:
            return await executor(self.engine, change)
        raise ApplyError(f"{change.id}: no executor for kind {change.kind}")

    async def _release(self, change: Change) -> str:
        if change.action is Action.DELETE:
            managed = self._managed(change)
            if (managed.kube_context, managed.namespace, managed.release) in protected_releases(
                self.topology
            ):
                raise ApplyError(
                    f"{change.target}: a workspace-provider release kept for rollback; "
                    "not uninstalled"
                )
            helm = self.engine.site_helm(managed)
            removed = await helm.uninstall(managed.namespace, managed.release)
            return f"{change.target}: {'uninstalled' if removed else 'already gone'}"
        site = self._site(change.region)
        if isinstance(site, Region):
            # Recorded before installing: a crash mid-install still leaves a way to remove it.
            await self.engine.record_site(ManagedSite.of(self.topology, site))
        helm = self.engine.site_helm(site)
        await helm.recover(site.namespace, site.release)
        source = chart_source(self.topology.chart_for(site), self.engine.base)
        values = release_values(self.topology, site, token_secret=self.engine.token_secret)
        await helm.install(
            site.namespace, site.release, source, values, wait=True,
            description=f"coder-migrate {self.report.run}",
        )
        return f"{change.target}: installed"

    async def _satellite(self, change: Change) -> str:
        async with self.engine.coder_v1() as coder:
            registered = await coder.find_satellite(change.region)
            if change.action is Action.DELETE:
                if registered is None:
                    return f"satellite {change.region}: already deregistered"
                await coder.delete_satellite(registered.id)
                return f"satellite {change.region}: deregistered"
            region = self.topology.region(change.region)
            expected = await release_key_fingerprint(self.engine, region)
            served = await _wait_for_key(coder, region.access_url, self.key_timeout, expected)
            computed = keys.fingerprint(served.key)
            if computed != served.fingerprint:
                raise ApplyError(
                    f"satellite {region.name} at {region.access_url} serves fingerprint "
                    f"{served.fingerprint[:16]}... that does not match its key "
                    f"({computed[:16]}...); not registered"
                )
            if registered is not None and registered.fingerprint == computed:
                return f"satellite {region.name}: already registered with key {computed[:16]}..."
            if registered is not None:
                await coder.delete_satellite(registered.id)
            await coder.create_satellite(region.name, served.key)
            return f"satellite {region.name}: registered with key {computed[:16]}..."

    async def _proxy(self, change: Change) -> str:
        token_secret = self.engine.token_secret
        if change.kind == KIND_PROXY_TOKEN and change.action is Action.DELETE:
            managed = self._managed(change)
            kube = self.engine.site_kube(managed)
            deleted = await kube.delete_secret(managed.namespace, token_secret.name)
            return f"{change.target}: {'deleted' if deleted else 'already gone'}"
        async with self.engine.coder_v2() as coder:
            existing = await coder.find_proxy(change.region)
            if change.kind == KIND_PROXY and change.action is Action.DELETE:
                if existing is None:
                    return f"workspace proxy {change.region}: already deleted"
                await coder.delete_proxy(existing.id)
                return f"workspace proxy {change.region}: deleted"
            region = self.topology.region(change.region)
            if change.kind == KIND_PROXY and change.action is Action.UPDATE:
                await coder.update_proxy(existing.id if existing else region.name,
                                         display_name=region.display_name, icon=region.icon)
                return f"workspace proxy {region.name}: display name and icon set"
            if existing is None:
                created = await coder.create_proxy(region.name, display_name=region.display_name,
                                                   icon=region.icon)
                what = "created"
            else:
                # A proxy from an interrupted run: its token was never stored. Regenerate.
                created = await coder.regenerate_proxy_token(
                    existing.id, display_name=region.display_name, icon=region.icon)
                what = "token regenerated"
            token = created.proxy_token.get_secret_value()
        kube = self.engine.site_kube(region)
        await kube.put_secret(
            region.namespace, token_secret.name, {token_secret.key: token},
            annotations={"coder-migrate/proxy": region.name},
        )
        # Running proxy pods read the token at start: roll them so the new one is used.
        restarted = await kube.restart_deployments(
            region.namespace, f"app.kubernetes.io/instance={region.release}"
        )
        rolled = f"; restarted {', '.join(restarted)}" if restarted else ""
        return (f"workspace proxy {region.name}: {what}, token stored in Secret "
                f"{token_secret.name}{rolled}")

    # -- health gates -----------------------------------------------------------------------

    async def gate(self, wave: Wave, timeout: float) -> None:
        if wave.name == "dns":
            if self.plan.operation == VERIFIED_OPERATION:
                await raise_unless_verified(
                    self.topology, {c.region for c in wave.effective},
                    timeout=self.dns_verify_timeout, progress=self.progress,
                )
            return
        if wave.name == "removals":
            return
        regions = sorted({c.region for c in wave.effective})
        await asyncio.gather(*(self._gate_site(name, timeout) for name in regions))

    async def _gate_site(self, name: str, timeout: float) -> None:
        site = self._site(name)
        self.progress(name, "gate", "waiting for the health gate")
        problem = await health_gate(self.engine, site, timeout)
        if problem:
            raise ApplyError(f"{name}: health gate not met within {timeout:.0f} s: {problem}")
        self.progress(name, "gate-ok", "healthy")


SATELLITE_KEY_SECRET = "coder-replica-private-key"  # noqa: S105 - a Secret's name
"""The Secret the Coder v1 chart keeps the satellite's private key in (key ``privateKey``)."""
SATELLITE_KEY_FIELD = "privateKey"


async def release_key_pem(engine: Engine, region: Region) -> str | None:
    """The private key the region's release gave its satellite (the chart's key Secret), or
    ``None`` when there is no such Secret to read."""
    try:
        pem = await engine.site_kube(region).secret_value(
            region.namespace, SATELLITE_KEY_SECRET, SATELLITE_KEY_FIELD
        )
    except KubeError:
        return None
    return pem or None


async def release_key_fingerprint(engine: Engine, region: Region) -> str | None:
    """The fingerprint of :func:`release_key_pem`'s key, or ``None`` when there is none."""
    pem = await release_key_pem(engine, region)
    if pem is None:
        return None
    try:
        return keys.fingerprint(keys.public_key_pem(pem))
    except ValueError:
        return None


async def _wait_for_key(
    coder: CoderV1Client, access_url: str, timeout: float, expected: str | None
) -> SatelliteKey:
    """The key served at *access_url*; with *expected*, only once it is that key.

    Another process may still answer at the access URL for a while (an old pod of a rollout,
    a satellite being removed from the same address): registering its key would make every
    signed request of the new satellite fail, so wait for the release's own key.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            served = await coder.fetch_satellite_key(access_url)
        except CoderAPIError:
            if time.monotonic() >= deadline:
                raise
        else:
            fingerprint = keys.fingerprint(served.key)
            if expected is None or fingerprint == expected:
                return served
            if time.monotonic() >= deadline:
                raise ApplyError(
                    f"{access_url} serves key {fingerprint[:16]}..., not the "
                    f"key {expected[:16]}... of this release (Secret {SATELLITE_KEY_SECRET}): "
                    "another process answers at this access URL; not registered"
                )
        await asyncio.sleep(GATE_POLL)


async def health_gate(engine: Engine, site: Primary | Region, timeout: float) -> str:
    """Wait until *site* is healthy; return the last problem, or "" when healthy."""
    deadline = time.monotonic() + timeout
    problem = "not checked"
    while True:
        problem = await site_problem(engine, site)
        if not problem or time.monotonic() >= deadline:
            return problem
        await asyncio.sleep(GATE_POLL)


async def site_problem(engine: Engine, site: Primary | Region) -> str:
    """One health check of a site; "" when healthy."""
    helm = engine.site_helm(site)
    release = await helm.release(site.namespace, site.release)
    if release is None or release.status != "deployed":
        return f"release {site.release} is {release.status if release else 'not installed'}"
    pods = await engine.site_kube(site).pods(site.namespace)
    not_ready = [p.name for p in pods if not p.ready]
    if not pods or not_ready:
        return f"pods not ready: {', '.join(not_ready) or 'none running'}"
    topology = engine.topology
    if isinstance(site, Primary):
        try:
            if topology.generation == "v1":
                async with engine.coder_v1() as v1:
                    await v1.version(refresh=True)
            else:
                async with engine.coder_v2() as v2:
                    await v2.buildinfo()
        except CoderAPIError as error:
            return f"the primary does not answer: {error}"
        return ""
    if topology.generation == "v1":
        async with engine.coder_v1() as v1:
            registered = await v1.find_satellite(site.name)
            if registered is None:
                return "the satellite is not registered"
            try:
                served = await v1.fetch_satellite_key(site.access_url)
            except CoderAPIError as error:
                return f"the satellite does not serve its key: {error}"
        if served.fingerprint != registered.fingerprint:
            return "the satellite's key differs from its registration"
        ok, why = await probe_url(health_url(site.access_url, "v1"))
        return "" if ok else f"{health_url(site.access_url, 'v1')}: {why}"
    async with engine.coder_v2() as v2:
        proxy = await v2.find_proxy(site.name)
    if proxy is None:
        return "the workspace proxy is not on the primary"
    if proxy.status.status != "ok":
        errors = "; ".join(proxy.status.report.errors)
        return f"the primary reports the proxy {proxy.status.status}" + (
            f" ({errors})" if errors else ""
        )
    return ""
