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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from coder_migrate import inventory_listing
from coder_migrate.errors import InventoryError, InventoryProblem
from coder_migrate.inventory.model import Primary, Region, Topology
from coder_migrate.inventory.rules import cross_field_findings

__all__ = [
    "PRIMARY_GROUP",
    "REGIONS_GROUP",
    "load_topology",
    "read_inventory_json",
    "topology_from_inventory_json",
]

PRIMARY_GROUP = "coder_primary"
REGIONS_GROUP = "coder_regions"
PREFIX = "coder_"
_SECRET_FIELDS = frozenset({"session_token", "api_key", "tsig_secret"})

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
    label = _display(directory)
    if not directory.is_dir():
        raise InventoryError([_problem(label, "-", "-", "an inventory directory", "no directory")])
    if not any((directory / name).is_file() for name in ("hosts.yml", "hosts.yaml", "hosts")):
        raise InventoryError(
            [_problem(label, "-", "hosts.yml", "a hosts.yml in the inventory directory", "none")]
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
        if not path.is_file():
            continue
        try:
            yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark
            where = f"{_display(path)}:{mark.line + 1}" if mark else _display(path)
            text = error.problem or "a syntax error"
            expected, found = text.split(", found ", 1) if ", found " in text else ("", text)
            problems.append(_problem(where, "-", "-", expected or "valid YAML", found))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            problems.append(_problem(_display(path), "-", "-", "a readable YAML file", str(error)))
    if problems:
        raise InventoryError(problems)


# libyaml's parser when PyYAML was built with it (much faster on large inventories).
_SafeLoaderBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoaderBase):  # type: ignore[valid-type,misc]
    """A safe loader that refuses duplicate keys, which YAML parsers resolve differently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"each key once, found {key!r} twice", key_node.start_mark
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


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
    sources = _SourceMap(directory, data)
    problems: list[InventoryProblem] = []

    def add(owner: str, key: str, expected: str, found: str) -> None:
        problems.append(_problem(sources.file_for(owner, key), owner, key, expected, found))

    hostvars = _mapping(_mapping(data.get("_meta")).get("hostvars"))
    primaries = _group_hosts(data, PRIMARY_GROUP)
    regions = _group_hosts(data, REGIONS_GROUP)
    if len(primaries) != 1:
        add(
            PRIMARY_GROUP, "hosts", f"exactly one host in group {PRIMARY_GROUP}",
            f"{len(primaries)} ({', '.join(primaries) or 'none'})",
        )
        raise InventoryError(problems)
    primary_name = primaries[0]
    for name in regions:
        if name == primary_name:
            add(name, "groups", f"a host in only one of {PRIMARY_GROUP} and {REGIONS_GROUP}",
                "both")
    if problems:
        raise InventoryError(problems)

    def variables(host: str, allowed: set[str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for variable, value in _mapping(hostvars.get(host)).items():
            if not isinstance(variable, str) or not variable.startswith(PREFIX):
                continue
            if variable not in _KNOWN_VARS:
                close = difflib.get_close_matches(variable, sorted(_KNOWN_VARS), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                add(host, variable, f"a known coder-migrate setting{hint}", "an unknown key")
            elif variable in allowed:
                values[_field(variable)] = value
            elif variable not in _GLOBAL_VARS:
                add(host, variable, "a setting of regions only, not of the primary", "it set")
        return values

    primary_vars = variables(primary_name, _PRIMARY_VARS | _GLOBAL_VARS)
    region_vars = {name: variables(name, _REGION_VARS | _GLOBAL_VARS) for name in regions}
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
        "primary": {"name": primary_name, **primary_vars},
        "regions": [{"name": name, **values} for name, values in region_vars.items()],
    }
    topology: Topology | None = None
    try:
        topology = Topology.model_validate(raw)
    except ValidationError as error:
        for entry in error.errors(include_url=False):
            owner, key = _locate(entry["loc"], raw)
            expected, found = _describe(entry, key)
            add(owner, key, expected, found)
    if topology is not None:
        for finding in cross_field_findings(topology):
            add(finding.owner, finding.key, finding.expected, finding.found)
    if problems:
        raise InventoryError(_unique(problems))
    assert topology is not None
    return topology


def _group_hosts(data: Mapping[str, Any], group: str) -> list[str]:
    """Hosts of *group* including its child groups, in inventory order."""
    hosts: list[str] = []
    pending, seen = [group], set()
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        entry = _mapping(data.get(name))
        for host in _strings(entry.get("hosts")):
            if host not in hosts:
                hosts.append(host)
        pending.extend(_strings(entry.get("children")))
    return hosts


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _locate(loc: tuple[int | str, ...], raw: Mapping[str, Any]) -> tuple[str, str]:
    """Turn a pydantic error location into (host or "all", inventory key)."""
    parts = [p for p in loc if isinstance(p, int) or not any(c in p for c in "[(")]
    owner = "all"
    if parts and parts[0] == "primary":
        owner, parts = str(raw["primary"]["name"]), parts[1:]
    elif parts and parts[0] == "regions" and len(parts) > 1 and isinstance(parts[1], int):
        owner, parts = str(raw["regions"][parts[1]]["name"]), parts[2:]
    elif parts and parts[0] == "chart":
        owner = str(raw["primary"]["name"])
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


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _problem(file: str, owner: str, key: str, expected: str, found: str) -> InventoryProblem:
    return InventoryProblem(file=file, owner=owner, key=key, expected=expected, found=found)


class _SourceMap:
    """Finds the file that defines a key for a host, following Ansible's precedence."""

    def __init__(self, directory: Path, data: Mapping[str, Any]) -> None:
        self._directory = directory
        self._data = data
        self._cache: dict[Path, dict[str, Any]] = {}

    def file_for(self, owner: str, key: str) -> str:
        variable = key.split(".", 1)[0].split("[", 1)[0]
        for path in self._candidates(owner):
            if variable in self._top_level_keys(path, owner):
                return _display(path)
        return _display(self._hosts_file())

    def _hosts_file(self) -> Path:
        for name in ("hosts.yml", "hosts.yaml", "hosts"):
            if (self._directory / name).is_file():
                return self._directory / name
        return self._directory

    def _candidates(self, owner: str) -> list[Path]:
        groups = [g for g in self._groups_of(owner) if g != "all"] + ["all"]
        paths = [*self._vars_files("host_vars", owner), self._hosts_file()]
        for group in groups:
            paths.extend(self._vars_files("group_vars", group))
        return paths

    def _vars_files(self, kind: str, name: str) -> list[Path]:
        base = self._directory / kind
        files = [base / f"{name}{ext}" for ext in (".yml", ".yaml", "")]
        folder = base / name
        if folder.is_dir():
            files.extend(sorted(p for p in folder.iterdir() if p.suffix in (".yml", ".yaml")))
        return [f for f in files if f.is_file()]

    def _groups_of(self, host: str) -> list[str]:
        groups = []
        for group, entry in self._data.items():
            if host in _strings(_mapping(entry).get("hosts")):
                groups.append(group)
        return groups

    def _top_level_keys(self, path: Path, owner: str) -> dict[str, Any]:
        if path not in self._cache:
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                loaded = None
            self._cache[path] = loaded if isinstance(loaded, dict) else {}
        content = self._cache[path]
        if path == self._hosts_file():
            return _inline_vars(content, owner)
        return content


def _inline_vars(tree: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Variables set in hosts.yml for *owner* (as a host) or for the group named *owner*."""
    found: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = list(tree.items())
    while stack:
        name, entry = stack.pop()
        if not isinstance(entry, Mapping):
            continue
        if name == owner and isinstance(entry.get("vars"), Mapping):
            found.update(entry["vars"])
        for host, host_vars in (entry.get("hosts") or {}).items():
            if host == owner and isinstance(host_vars, Mapping):
                found.update(host_vars)
        stack.extend((entry.get("children") or {}).items())
    return found

