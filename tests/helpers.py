"""Helpers shared by tests: copies of the example inventory with targeted edits."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_INVENTORY = REPO / "inventories" / "example"


def copy_inventory(destination: Path, source: Path = EXAMPLE_INVENTORY) -> Path:
    target = destination / source.name
    shutil.copytree(source, target)
    return target


def edit_yaml(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Load *path*, let *change* mutate the mapping, write it back."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


LAB_INVENTORY = REPO / "inventories" / "lab"


def fold_world_into_host_vars(inventory: Path) -> None:
    """Move what the copied lab's world (``world.yml``, coder_migrate/lab/world.yml) sets per
    host into that host's host_vars file, so a test edits every key of a host in one place.
    The inventory Ansible reads is the same."""
    world_file = inventory / "world.yml"
    world = yaml.safe_load(world_file.read_text(encoding="utf-8"))
    world_file.unlink()
    for group in world["all"]["children"].values():
        for host, host_world in group["hosts"].items():
            edit_yaml(inventory / "host_vars" / f"{host}.yml",
                      lambda data, host_world=host_world: data.update(
                          {k: v for k, v in host_world.items() if k not in data}))
# What inventories/lab gives every v1 release: coder/coder 1.21.0 renders a LoadBalancer
# Service, and the lab has no load balancer.
LAB_V1_SERVICE: dict[str, Any] = {"coderd": {"serviceSpec": {"type": "NodePort"}}}


def lab_v1_values(extra: dict[str, Any]) -> dict[str, Any]:
    """coder_values for a lab v1 host: the lab's Service type plus *extra* (a host's
    coder_values replaces its group's)."""
    from coder_migrate.engine.values import deep_merge

    return deep_merge(LAB_V1_SERVICE, extra)


def lab_inventory(
    destination: Path,
    *,
    tag: str,
    address_block: int,
    generation: str = "v1",
    primary_url: str | None = None,
    token_file: Path | None = None,
) -> Path:
    """A copy of inventories/lab whose regions do not collide with other tests.

    Namespaces, releases and DNS names carry *tag*; each region's satellite or proxy gets
    the loopback address 127.0.<address_block>.<n>; relative paths become absolute. For v2
    the chart is the coder-v2 stand-in (ClusterIP service) and *primary_url* / *token_file*
    point at a v2 emulator.
    """
    target = copy_inventory(destination, LAB_INVENTORY)
    target = target.rename(destination / f"lab-{tag}")
    fold_world_into_host_vars(target)
    state = REPO / ".lab"
    charts = REPO / "coder_migrate" / "lab" / "charts"
    zone = "lab.coder-migrate.test"

    def all_vars(data: dict[str, Any]) -> None:
        data["coder_generation"] = generation
        data["coder_session_token"] = {
            "file": str(token_file or state / "secrets" / "coder-token")
        }
        data["coder_chart"]["repo"] = str(charts)
        if generation == "v2":
            data["coder_chart"].update({"name": "coder-v2", "version": "2.15.0"})
            data["coder_version"] = "2.15.0"  # a v2 inventory targets Coder 2.x
        data["coder_dns"]["shared_hostname"] = f"coder-{tag}.{zone}"
        data["coder_dns"]["powerdns"]["api_key"] = {"file": str(state / "secrets" / "pdns-api-key")}

    edit_yaml(target / "group_vars" / "all" / "coder.yml", all_vars)

    def region_defaults(data: dict[str, Any]) -> None:
        data["coder_kubeconfig"] = str(state / "kubeconfig")
        data["coder_namespace"] = f"coder-sat-{tag}"
        data["coder_release"] = f"coder-sat-{tag}"
        if generation == "v2":
            data["coder_values"] = {"coder": {"service": {"type": "ClusterIP"}}}

    edit_yaml(target / "group_vars" / "coder_regions" / "region.yml", region_defaults)

    def primary(data: dict[str, Any]) -> None:
        data["coder_kubeconfig"] = str(state / "kubeconfig")
        data["coder_namespace"] = f"coder-{tag}"
        data["coder_release"] = f"coder-{tag}"
        data["coder_hostname"] = f"coder-primary-{tag}.{zone}"
        data["coder_wildcard_host"] = f"*.coder-primary-{tag}.{zone}"
        if primary_url:
            data["coder_access_url"] = primary_url
        if generation == "v2":
            data["coder_values"] = {"coder": {"service": {"type": "ClusterIP"}}}

    edit_yaml(target / "host_vars" / "primary.yml", primary)
    for index, region in enumerate(("us-east", "eu-west", "ap-southeast"), start=1):

        def region_vars(data: dict[str, Any], index: int = index, region: str = region) -> None:
            data["coder_access_url"] = f"http://127.0.{address_block}.{index}:{17080 + index}"
            data["coder_hostname"] = f"coder-{region}-{tag}.{zone}"
            data["coder_wildcard_host"] = f"*.coder-{region}-{tag}.{zone}"
            data["coder_dns_targets"] = [f"127.0.{address_block}.{index}"]
            if generation == "v2":
                data.pop("coder_workspace_providers", None)

        edit_yaml(target / "host_vars" / f"{region}.yml", region_vars)
    return target


COLLECTION_PLUGINS = REPO / "collections/ansible_collections/coder_migrate/toolkit/plugins"


@dataclass
class RecordedEngineCall:
    """Stands in for an engine function a module calls: records the call, returns *outcome*
    or raises *error*."""

    outcome: Any = None
    error: Exception | None = None
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome


def run_site_module(
    monkeypatch: Any, capsys: Any, name: str, engine_function: str,
    engine: RecordedEngineCall, args: dict[str, Any],
) -> tuple[int, dict[str, Any]]:
    """Run collection module *name* with *args*, its engine function (``package.module.func``)
    replaced by *engine*; its exit code and JSON result."""
    import json
    import sys
    import types

    import pytest
    from ansible.module_utils.testing import patch_module_args

    module_name, function = engine_function.rsplit(".", 1)
    stand_in = types.ModuleType(module_name)
    setattr(stand_in, function, engine)
    monkeypatch.setitem(sys.modules, module_name, stand_in)
    module = load_collection_module(name, monkeypatch)
    with patch_module_args(args), pytest.raises(SystemExit) as exited:
        module.main()
    return int(exited.value.code or 0), json.loads(capsys.readouterr().out)


def load_collection_module(
    name: str, monkeypatch: Any
) -> Any:
    """Import one of the collection's modules from its file, as Ansible runs it; its imports of
    ``ansible_collections.coder_migrate...module_utils`` resolve through the repository."""
    import importlib.util

    monkeypatch.syspath_prepend(str(REPO / "collections"))
    spec = importlib.util.spec_from_file_location(
        f"{name}_module_under_test", COLLECTION_PLUGINS / "modules" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class PrivateLab:
    """Where a private lab runs (own state directory, ports moved by *port_offset*, region
    proxies on 127.0.<address_block>.N) so it never meets the session's lab; what a shipped
    lab inventory, or a command of the README, says about the default lab is rewritten to it
    by :meth:`relocate`, and nothing else."""

    state_dir: Path
    port_offset: int
    address_block: int

    def environment(self) -> dict[str, str]:
        """What points every ``coder-migrate lab`` command at this lab."""
        from coder_migrate.lab.paths import STATE_ENV
        from coder_migrate.lab.settings import PORT_OFFSET_ENV

        return {STATE_ENV: str(self.state_dir), PORT_OFFSET_ENV: str(self.port_offset)}

    def relocate(self, text: str) -> str:
        """*text* with the default lab's places replaced by this lab's: the checkout's
        ``.lab`` (relative or not), the lab's fixed ports on 127.0.0.1 (URLs and ``-p PORT``)
        and the region addresses 127.0.1.N[:PORT]."""
        from coder_migrate.lab.settings import LabSettings

        moved = {
            default: default + self.port_offset
            for default in LabSettings.create().fixed_ports().values()
        }

        def port(match: re.Match[str]) -> str:
            number = int(match.group(2))
            return f"{match.group(1)}{moved.get(number, number)}"

        def region(match: re.Match[str]) -> str:
            suffix = f":{int(match.group(2)) + self.port_offset}" if match.group(2) else ""
            return f"127.0.{self.address_block}.{match.group(1)}{suffix}"

        text = re.sub(r"(?:\.\./\.\./|(?<![\w/])|" + re.escape(str(REPO)) + "/)\\.lab/",
                      str(self.state_dir) + "/", text)
        text = text.replace("../../coder_migrate/", f"{REPO}/coder_migrate/")
        text = re.sub(r"(127\.0\.0\.1:|-p )(\d+)\b", port, text)
        return re.sub(r"\b127\.0\.1\.(\d+)(?::(\d+))?\b", region, text)


def readme_commands(heading: str) -> list[str]:
    """The command lines of the first ``sh`` block under README.md's *heading* (the whole
    ``## ...`` line), comments and blank lines left out."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split(heading + "\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def run_as_user(
    lab: PrivateLab, workdir: Path, command: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a README *command* already moved to *lab* (:meth:`PrivateLab.relocate`) as a user
    would, in *workdir* with bash, the README's ``.venv/bin/`` being this interpreter's; a
    wide terminal, so tables are not wrapped."""
    command = command.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    env = {**os.environ, **lab.environment(), "COLUMNS": "200"}
    return subprocess.run(
        ["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def relocated_inventory(source: Path, destination: Path, lab: PrivateLab) -> Path:
    """A copy of the lab inventory *source* (e.g. inventories/lab-v2) at *destination* whose
    only differences are :meth:`PrivateLab.relocate`'s; fails if a default place is left."""
    shutil.copytree(source, destination)
    for path in sorted(destination.rglob("*.yml")):
        text = lab.relocate(path.read_text(encoding="utf-8"))
        leftovers = [marker for marker in ("../../", "127.0.1.") if marker in text]
        if leftovers:
            raise AssertionError(f"{path}: relocate() left {leftovers[0]!r} behind")
        path.write_text(text, encoding="utf-8")
    return destination


def wait_for(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll *check* every 0.2 s until it returns something true (an HTTP or OS error, or a
    missing key or value, counts as not yet); fail the test naming *what* after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)
