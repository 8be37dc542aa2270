"""Render a region rollout runbook (markdown or html) from templates/runbook/.

The content comes from :func:`coder_migrate.runbook.assumed.assumed_plan`; the templates only
lay it out. Secrets appear only as their references (``env NAME`` / ``file PATH``): the
renderer never resolves one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import jinja2

from coder_migrate.engine.plan import Action, Plan
from coder_migrate.errors import ConfigError, PlanError
from coder_migrate.inventory import Primary, Region, Topology
from coder_migrate.migrations.v1_20_to_v1_21 import MIGRATION
from coder_migrate.runbook.assumed import ASSUMPTIONS, assumed_plan
from coder_migrate.runbook.steps import Check, Commands, Step, command, steps_of

__all__ = ["FORMATS", "Runbook", "build_runbook", "render_runbook"]

Format = Literal["md", "html"]
FORMATS: tuple[Format, ...] = ("md", "html")

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("coder_migrate", "templates/runbook"),
    undefined=jinja2.StrictUndefined,
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Contact:
    key: str
    value: str

    @property
    def is_link(self) -> bool:
        return self.value.startswith(("https://", "http://"))


@dataclass(frozen=True)
class SecretReference:
    what: str
    reference: str


@dataclass(frozen=True)
class Prerequisites:
    tools: tuple[tuple[str, str], ...]
    checks: tuple[Check, ...]
    secrets: tuple[SecretReference, ...]
    primary_url: str
    primary_context: str
    primary_namespace: str


@dataclass(frozen=True)
class Section:
    """One site's part of the rollout: a region, or the shared names at the end."""

    name: str
    display_name: str
    wave: str
    canary: bool
    kube_context: str
    namespace: str
    access_url: str
    before: tuple[Check, ...]
    plan: Check
    apply: Check
    steps: tuple[Step, ...]
    verify: tuple[Check, ...]
    rollback: Check
    counts: str


@dataclass(frozen=True)
class Runbook:
    title: str
    migration: str
    all_regions: bool
    inventory: str
    scope: str
    assumptions: tuple[str, ...]
    notes: tuple[str, ...]
    prerequisites: Prerequisites
    contacts: tuple[Contact, ...]
    sections: tuple[Section, ...]


def _counts(plan_changes: list[Action]) -> str:
    counts = {a: plan_changes.count(a) for a in Action if a is not Action.KEEP}
    return ", ".join(f"{n} to {a.value}" for a, n in counts.items() if n) or "no changes"


def _prerequisites(topology: Topology, c: Commands, regions: list[Region]) -> Prerequisites:
    primary = topology.primary
    checks = [
        Check(c.kubectl(primary, "auth", "can-i", "update", "configmaps",
                        namespace=primary.namespace),
              "yes: the journal, lock and records live in the primary's namespace"),
    ]
    for region in regions:
        checks.append(Check(c.kubectl(region, "auth", "can-i", "create", "deployments",
                                      namespace=region.namespace),
                            f"yes ({region.name}; preflight asks the same)"))
        for provider in region.workspace_providers:
            checks.append(Check(c.helm_status(region, provider.release, provider.namespace),
                                f"STATUS: deployed (the old release of provider {provider.name})"))
        if region.tls is not None:
            names = dict.fromkeys(n for n in (region.tls.host_secret, region.tls.wildcard_secret)
                                  if n)
            for name in names:
                checks.append(Check(
                    c.kubectl(region, "get", "secret", name, "-o", "name",
                              namespace=region.namespace),
                    f"secret/{name} (type kubernetes.io/tls, with tls.crt and tls.key; create "
                    "the namespace and secret beforehand, e.g. with cert-manager)",
                ))
    checks.append(Check(command("curl", "-sSI", f"{primary.access_url.rstrip('/')}/api"),
                        f"a coder-version header of {topology.version} or later (1.21+); "
                        "preflight stops on a 1.20 primary"))
    secrets = [SecretReference("Coder session token of a site manager (coder_session_token)",
                      topology.session_token.describe())]
    dns = topology.dns
    if dns.powerdns is not None and dns.provider == "powerdns":
        secrets.append(SecretReference(f"PowerDNS API key for {dns.powerdns.api_url}",
                              dns.powerdns.api_key.describe()))
    if dns.rfc2136 is not None and dns.provider == "rfc2136":
        secrets.append(SecretReference(f"TSIG secret of key {dns.rfc2136.tsig_key_name}",
                              dns.rfc2136.tsig_secret.describe()))
    tools = (
        ("coder-migrate", "this project's CLI, installed where the commands below run"),
        ("kubectl", "to verify namespaces, pods and records"),
        ("helm", "to verify releases (helm status)"),
        ("curl", "to reach the primary and the satellites"),
    )
    return Prerequisites(tools=tools, checks=tuple(checks), secrets=tuple(secrets),
                         primary_url=primary.access_url, primary_context=primary.kube_context,
                         primary_namespace=primary.namespace)


def _section(c: Commands, site: Primary | Region, plan: Plan, wave: str) -> Section:
    changes = [ch for ch in plan.effective_changes if ch.region == site.name]
    is_region = isinstance(site, Region)
    limit = site.name if is_region else None
    replan = c.cli("migrate", "plan", limit=limit) + " --detailed-exitcode"
    if is_region:
        verify = [
            Check(c.cli("status", limit=limit),
                  f"exit 0; the {site.name} row is healthy and reachable yes"),
            Check(c.cli("dns", "check", limit=limit), f"exit 0; every row for {site.name} ok"),
            Check(c.cli("migrate", "status"),
                  f"{site.name}: step {changes[-1].kind if changes else '-'}, next nothing "
                  "(migrated)"),
            Check(replan, "exit 0 and \"No changes\": nothing of the region is left to do"),
        ]
        before = [Check(c.cli("migrate", "status"),
                        f"{site.name}: not started (or the step to resume from)")]
    else:
        verify = [
            Check(c.cli("dns", "check"), "exit 0; every row ok"),
            Check(c.cli("migrate", "status"), "every region: next nothing (migrated)"),
            Check(replan, "exit 0 and \"No changes\""),
        ]
        before = [Check(c.cli("migrate", "status"),
                        "every region has finished its own steps (RetainRelease)")]
    display = site.display_name if isinstance(site, Region) else "shared and primary names"
    canary = isinstance(site, Region) and wave.startswith("canary")
    return Section(
        name=site.name, display_name=display, wave=wave, canary=canary,
        kube_context=site.kube_context, namespace=site.namespace, access_url=site.access_url,
        before=tuple(before),
        plan=Check(c.cli("migrate", "plan", limit=limit),
                   f"preflight passes and the plan lists the changes below "
                   f"({_counts([ch.action for ch in changes])})"),
        apply=Check(c.cli("migrate", "apply", limit=limit),
                    "asks to confirm, then reports each change; ends with \"Apply complete\""),
        steps=tuple(steps_of(c, site, changes)),
        verify=tuple(verify),
        rollback=Check(c.cli("migrate", "rollback", limit=limit),
                       "restores the region's DNS records, switches Networking v2 off, "
                       "deregisters and uninstalls the satellite, in reverse; the old release "
                       "keeps serving. Resumable: run it again after an interruption"
                       if is_region else
                       "without --limit this rolls back EVERY region first, then restores the "
                       "shared and primary names; use it only to abandon the whole migration"),
        counts=_counts([ch.action for ch in changes]),
    )


def build_runbook(topology: Topology, inventory: str, region: str | None = None) -> Runbook:
    """The runbook's content for *region*, or every region (canary first, shared DNS last).

    *inventory* is the directory as the user gave it: commands show it verbatim.
    """
    plan = assumed_plan(topology, region)
    c = Commands(inventory=inventory, topology=topology)
    sections = []
    primary = topology.primary
    for wave in plan.waves:
        for name in wave.regions:
            if not any(ch.region == name for ch in wave.effective):
                continue
            site: Primary | Region = primary if name == primary.name else topology.region(name)
            sections.append(_section(c, site, plan, wave.name))
    regions = [topology.region(s.name) for s in sections if s.name != primary.name]
    scope = (f"region {region}" if region is not None
             else f"all {len(topology.regions)} regions, canary first")
    return Runbook(
        title=f"Coder {MIGRATION} migration runbook: {scope}",
        migration=MIGRATION, all_regions=region is None, inventory=inventory, scope=scope,
        assumptions=ASSUMPTIONS,
        notes=plan.notes, prerequisites=_prerequisites(topology, c, regions),
        contacts=tuple(Contact(k, v) for k, v in topology.contacts.items()),
        sections=tuple(sections),
    )


def render_runbook(
    topology: Topology, inventory: str, *, region: str | None = None, fmt: str = "md"
) -> str:
    """The runbook as markdown or html text."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    runbook = build_runbook(topology, inventory, region)
    try:
        template = _ENVIRONMENT.get_template(f"runbook.{fmt}.j2")
        text = template.render(runbook=runbook)
    except jinja2.TemplateError as error:
        raise PlanError(f"runbook template runbook.{fmt}.j2: {error}") from None
    # Blocks and macros leave runs of blank lines; one is enough in either format.
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
