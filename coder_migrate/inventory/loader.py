"""Read an Ansible inventory directory into a validated :class:`Topology`.

The inventory is read only through ``ansible-inventory --list`` so that Ansible and Python
see the same merged values. Every broken rule becomes one :class:`InventoryProblem` naming
the file that defines the key (the most specific of host_vars, hosts.yml, group_vars), the
host or ``all``, the key, what was expected and what was found. Problems are collected, not
raised one by one, so a user fixes them all in one pass.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from coder_migrate import inventory_listing, sensitive
from coder_migrate.errors import InventoryError, InventoryProblem
from coder_migrate.inventory.groups import PRIMARY_GROUP, REGIONS_GROUP, read_layout
from coder_migrate.inventory.infra_rules import infra_findings
from coder_migrate.inventory.model import Primary, Region, Topology
from coder_migrate.inventory.provisioner_rules import provisioner_findings
from coder_migrate.inventory.rules import cross_field_findings
from coder_migrate.inventory.site_rules import site_findings
from coder_migrate.inventory.sources import (
    HOSTS_FILES,
    SourceMap,
    StrictLoader,
    display,
    hosts_file,
    is_ini,
)
from coder_migrate.inventory.vault import VAULT_KEY

__all__ = [
    "PRIMARY_GROUP",
    "REGIONS_GROUP",
    "load_topology",
    "read_inventory_json",
    "topology_from_inventory_json",
]

PREFIX = "coder_"
_SECRET_FIELDS = frozenset(
    {"session_token", "api_key", "tsig_secret", "access_key_id", "secret_access_key"}
)
# Settings that are, or hold, secret references (which may be !vault values).
_SECRET_VARS = frozenset({"coder_session_token", "coder_dns", "coder_database"})

# Inventory variable -> model field, where the name is not simply ``coder_<field>``.
_RENAMED = {"coder_region_display_name": "display_name"}
# Settings that describe the whole environment: they must be the same on every host.
GLOBAL_FIELDS = ("generation", "version", "session_token", "dns", "contacts")


def variable_name(field: str) -> str:
    for variable, name in _RENAMED.items():
        if name == field:
            return variable
    return PREFIX + field


def _field(variable: str) -> str:
    return _RENAMED.get(variable, variable.removeprefix(PREFIX))


def _site_fields(model: type[Primary] | type[Region]) -> set[str]:
    return set(model.model_fields) - {"name"}


_PRIMARY_VARS = {variable_name(f) for f in _site_fields(Primary)}
_REGION_VARS = {variable_name(f) for f in _site_fields(Region)}
_GLOBAL_VARS = {variable_name(f) for f in GLOBAL_FIELDS}
# Chart is both a default for all and a per-site override.
_KNOWN_VARS = _PRIMARY_VARS | _REGION_VARS | _GLOBAL_VARS


def load_topology(inventory_dir: Path | str) -> Topology:
    """Run ``ansible-inventory --list`` on *inventory_dir* and validate the result."""
    directory = Path(inventory_dir)
    data = read_inventory_json(directory)
    return topology_from_inventory_json(data, directory)


def read_inventory_json(directory: Path) -> dict[str, Any]:
    label = str(directory)
    if not directory.is_dir():
        raise InventoryError([_problem(label, "-", "-", "an inventory directory", "no directory")])
    if hosts_file(directory) is None:
        raise InventoryError(
            [_problem(label, "-", "hosts.yml", f"one of {', '.join(HOSTS_FILES)} in the "
                      "inventory directory", "none")]
        )
    _check_yaml_syntax(directory)
    result = inventory_listing.result(directory, _ansible_inventory())
    if result.returncode != 0:
        raise InventoryError(
            [
                _problem(
                    label, "-", "-", "an inventory Ansible can parse",
                    _first_error_line(result.stderr),
                )
            ]
        )
    try:
        parsed: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise InventoryError(
            [_problem(label, "-", "-", "JSON from ansible-inventory --list", str(error))]
        ) from None
    return parsed


def _check_yaml_syntax(directory: Path) -> None:
    """Name the file and line of a YAML syntax error, which Ansible's message leaves out."""
    problems = []
    for path in sorted(directory.rglob("*")):
        if path.suffix not in (".yml", ".yaml") and path.name != "hosts":
            continue
        if not path.is_file() or is_ini(path):
            continue
        try:
            yaml.load(path.read_text(encoding="utf-8"), Loader=StrictLoader)  # noqa: S506
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark
            shown = display(path, directory)
            where = f"{shown}:{mark.line + 1}" if mark else shown
            text = error.problem or "a syntax error"
            expected, found = text.split(", found ", 1) if ", found " in text else ("", text)
            problems.append(_problem(where, "-", "-", expected or "valid YAML", found))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            problems.append(_problem(display(path, directory), "-", "-",
                                     "a readable YAML file", str(error)))
    if problems:
        raise InventoryError(problems)


def _ansible_inventory() -> str:
    found = inventory_listing.ansible_inventory_executable()
    if found is None:
        raise InventoryError(
            [_problem("-", "-", "-", "ansible-inventory on PATH (from ansible-core)", "none")]
        )
    return found


def _first_error_line(stderr: str) -> str:
    for line in stderr.splitlines():
        text = line.strip()
        if text.startswith(("[ERROR]", "ERROR!", "[WARNING]")) or "rror" in text:
            return text.removeprefix("[ERROR]: ").removeprefix("ERROR! ").strip()
    return stderr.strip().splitlines()[0] if stderr.strip() else "ansible-inventory failed"


def topology_from_inventory_json(data: Mapping[str, Any], directory: Path) -> Topology:
    """Validate the JSON of ``ansible-inventory --list`` into a :class:`Topology`."""
    sources = SourceMap(directory, data)
    problems: list[InventoryProblem] = []

    def add(owner: str, key: str, expected: str, found: str) -> None:
        problems.append(_problem(sources.file_for(owner, key), owner, key, expected, found))

    hostvars = _mapping(_mapping(data.get("_meta")).get("hostvars"))
    sensitive.register_masked(_sensitive_values(hostvars))
    layout = read_layout(data)
    for finding in layout.findings:
        add(finding.owner, finding.key, finding.expected, finding.found)
    if problems or layout.primary is None:
        raise InventoryError(problems)
    refused: set[tuple[str, str]] = set()  # (host, key) already reported: no second line

    def refuse(owner: str, key: str, expected: str, found: str) -> None:
        refused.add((owner, key))
        add(owner, key, expected, found)

    primary_vars = _site_variables(hostvars, layout.primary, _PRIMARY_VARS | _GLOBAL_VARS,
                                   refuse)
    region_vars = {name: _site_variables(hostvars, name, _REGION_VARS | _GLOBAL_VARS, refuse)
                   for name in layout.regions}
    shared = {field: primary_vars.pop(field) for field in GLOBAL_FIELDS if field in primary_vars}
    for name, values in region_vars.items():
        for field in GLOBAL_FIELDS:
            value = values.pop(field, None)
            if value != shared.get(field):
                add(
                    name, variable_name(field),
                    "the same value on every host (set it once in group_vars/all)",
                    "a different value" if field not in _SECRET_FIELDS else "a different reference",
                )

    raw = {
        "source": str(directory),
        **shared,
        "chart": primary_vars.get("chart"),
        "primary": {"name": layout.primary, **primary_vars},
        "regions": [{"name": name, **values} for name, values in region_vars.items()],
    }
    topology: Topology | None = None
    try:
        topology = Topology.model_validate(raw)
    except ValidationError as error:
        for entry in error.errors(include_url=False):
            owner, key = _locate(entry["loc"], raw)
            if (owner, key) not in refused:
                add(owner, key, *_describe(entry, key))
    if topology is not None:
        for finding in [*cross_field_findings(topology), *site_findings(topology),
                        *infra_findings(topology),
                        *provisioner_findings(topology)]:
            add(finding.owner, finding.key, finding.expected, finding.found)
    if problems:
        raise InventoryError(_unique(problems))
    assert topology is not None
    return topology


def _site_variables(
    hostvars: Mapping[str, Any], host: str, allowed: set[str],
    add: Callable[[str, str, str, str], None],
) -> dict[str, Any]:
    """The coder_* settings of *host* as model fields; unknown and misplaced keys are added
    as problems."""
    values: dict[str, Any] = {}
    for variable, value in _mapping(hostvars.get(host)).items():
        if not isinstance(variable, str) or not variable.startswith(PREFIX):
            continue
        if variable not in _KNOWN_VARS:
            close = difflib.get_close_matches(variable, sorted(_KNOWN_VARS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            add(host, variable, f"a known coder-migrate setting{hint}", "an unknown key")
        elif variable not in allowed and variable not in _GLOBAL_VARS:
            where = ("a setting of regions only, not of the primary" if variable in _REGION_VARS
                     else "a setting of the primary only, not of a region")
            add(host, variable, where, "it set")
        elif variable not in _SECRET_VARS and _has_vault(value):
            add(host, variable, "a plain value (only secret references may be !vault values; "
                "Helm values reach secrets through Kubernetes Secrets)", "a !vault value")
        else:
            values[_field(variable)] = value
    return values


def _has_vault(value: Any) -> bool:
    if isinstance(value, Mapping):
        return set(value) == {VAULT_KEY} or any(_has_vault(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_vault(v) for v in value)
    return False


def _sensitive_values(hostvars: Mapping[str, Any]) -> list[Any]:
    """Helm values typed into the inventory: what they hide is scrubbed from all output."""
    return [_mapping(variables).get("coder_values") for variables in hostvars.values()]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _locate(loc: tuple[int | str, ...], raw: Mapping[str, Any]) -> tuple[str, str]:
    """Turn a pydantic error location into (host or "all", inventory key)."""
    parts = [p for p in loc if isinstance(p, int) or not any(c in p for c in "[(")]
    owner = "all"
    # Topology's field holding the primary (its host name is under "name", whatever it is).
    primary_field = "primary"
    if parts and parts[0] == primary_field:
        owner, parts = str(raw[primary_field]["name"]), parts[1:]
    elif parts and parts[0] == "regions" and len(parts) > 1 and isinstance(parts[1], int):
        owner, parts = str(raw["regions"][parts[1]]["name"]), parts[2:]
    elif parts and parts[0] == "chart":
        owner = str(raw[primary_field]["name"])
    if not parts:
        return owner, "-"
    key = variable_name(str(parts[0]))
    for part in parts[1:]:
        key += f"[{part}]" if isinstance(part, int) else f".{part}"
    return owner, key


def _describe(entry: Mapping[str, Any], key: str) -> tuple[str, str]:
    kind = entry["type"]
    message = str(entry["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        return "a value (it is required)", "nothing"
    if kind == "extra_forbidden":
        return "only known keys", "an unknown key"
    if ", found " in message:
        expected, found = message.rsplit(", found ", 1)
        return expected, found
    secret = any(name in key for name in _SECRET_FIELDS)
    found = "a literal value (not shown)" if secret else _short(entry.get("input"))
    return message[0].lower() + message[1:] if message else kind, found


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unique(problems: list[InventoryProblem]) -> list[InventoryProblem]:
    """Drop repeats; a value set once in group_vars/<group> is reported once, for the group."""
    merged: dict[tuple[str, str, str, str], InventoryProblem] = {}
    for problem in problems:
        key = (problem.file, problem.key, problem.expected, problem.found)
        first = merged.get(key)
        if first is None:
            merged[key] = problem
        elif first.owner != problem.owner:
            group = _group_of_vars_file(problem.file)
            if group:
                first.owner = group
    return list(merged.values())


def _group_of_vars_file(file: str) -> str | None:
    parts = Path(file).parts
    if "group_vars" in parts[:-1]:
        name = parts[parts.index("group_vars") + 1]
        return name.removesuffix(".yml").removesuffix(".yaml")
    return None


def _problem(file: str, owner: str, key: str, expected: str, found: str) -> InventoryProblem:
    return InventoryProblem(file=file, owner=owner, key=key, expected=expected, found=found)
