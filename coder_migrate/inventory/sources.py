"""The files of an inventory directory: which one defines a key, how a path is shown, and
the YAML loaders that read them as Ansible does (``!vault`` and ``!unsafe`` tags, duplicate
keys refused). The hosts file may be YAML (``hosts.yml``) or Ansible's INI (``hosts``).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from coder_migrate.inventory.vault import VAULT_KEY

__all__ = ["HOSTS_FILES", "SourceMap", "StrictLoader", "display", "hosts_file", "is_ini"]

HOSTS_FILES = ("hosts.yml", "hosts.yaml", "hosts")

# libyaml's parser when PyYAML was built with it (much faster on large inventories).
_SafeLoaderBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class AnsibleLoader(_SafeLoaderBase):  # type: ignore[valid-type,misc]
    """A safe loader that knows Ansible's tags: ``!vault`` becomes what ansible-inventory
    --list makes of it, ``!unsafe`` a plain string."""


def _vault(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, str]:
    return {VAULT_KEY: str(loader.construct_scalar(node))}  # type: ignore[arg-type]


def _unsafe(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


AnsibleLoader.add_constructor("!vault", _vault)
AnsibleLoader.add_constructor("!unsafe", _unsafe)


class StrictLoader(AnsibleLoader):
    """Refuses duplicate keys, which YAML parsers resolve differently."""

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


def hosts_file(directory: Path) -> Path | None:
    for name in HOSTS_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def is_ini(path: Path) -> bool:
    """Whether a hosts file is Ansible's INI format: its first statement is a [section]
    (a YAML inventory starts with a key)."""
    if path.suffix in (".yml", ".yaml", ".json"):
        return False
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    for line in lines:
        text = line.strip()
        if text and not text.startswith(("#", ";", "---")):
            return text.startswith("[")
    return False


def display(path: Path, inventory: Path) -> str:
    """*path* as problems show it: relative to the current directory when the inventory is
    under it (``inventories/prod/host_vars/eu-west.yml``), else relative to the inventory
    (``host_vars/eu-west.yml``); the inventory directory itself as it was given."""
    root = inventory.resolve()
    resolved = path.resolve()
    if resolved == root:
        return str(inventory)
    cwd = Path.cwd()
    base = cwd if cwd != Path(cwd.anchor) and root.is_relative_to(cwd) else root
    try:
        return str(resolved.relative_to(base))
    except ValueError:
        return str(path)


class SourceMap:
    """Finds the file that defines a key for a host or group, following Ansible's
    precedence (host_vars, the hosts file, group_vars of its groups, group_vars/all)."""

    def __init__(self, directory: Path, data: Mapping[str, Any]) -> None:
        self._directory = directory
        self._data = data
        self._cache: dict[Path, dict[str, Any]] = {}
        self._hosts = hosts_file(directory) or directory
        # Ansible reads every YAML file of the directory as inventory (inventories/lab's
        # world.yml): after the hosts file, they too may set a host's variables.
        others = sorted(directory.glob("*.y*ml")) if directory.is_dir() else []
        self._sources = [self._hosts, *(p for p in others if p.is_file() and p != self._hosts)]

    def file_for(self, owner: str, key: str) -> str:
        variable = key.split(".", 1)[0].split("[", 1)[0]
        for path in self._candidates(owner):
            if variable in self._top_level_keys(path, owner):
                return display(path, self._directory)
        return display(self._hosts, self._directory)

    def _candidates(self, owner: str) -> list[Path]:
        groups = [g for g in self._groups_of(owner) if g != "all"] + ["all"]
        paths = [*self._vars_files("host_vars", owner), *self._sources]
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
        return [group for group, entry in self._data.items()
                if host in _strings(_mapping(entry).get("hosts"))]

    def _top_level_keys(self, path: Path, owner: str) -> Mapping[str, Any]:
        if path == self._hosts and is_ini(path):
            return _ini_vars(path, owner)
        if path not in self._cache:
            try:
                loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=AnsibleLoader)  # noqa: S506
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                loaded = None
            self._cache[path] = loaded if isinstance(loaded, dict) else {}
        content = self._cache[path]
        return _inline_vars(content, owner) if path in self._sources else content


def _inline_vars(tree: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Variables set in a YAML hosts file for *owner* (a host, or the group of that name)."""
    found: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = list(tree.items())
    while stack:
        name, entry = stack.pop()
        if not isinstance(entry, Mapping):
            continue
        if name == owner and isinstance(entry.get("vars"), Mapping):
            found.update(entry["vars"])
        hosts = entry.get("hosts")
        for host, host_vars in (hosts.items() if isinstance(hosts, Mapping) else ()):
            if host == owner and isinstance(host_vars, Mapping):
                found.update(host_vars)
        children = entry.get("children")
        stack.extend(children.items() if isinstance(children, Mapping) else ())
    return found


def _ini_vars(path: Path, owner: str) -> dict[str, str]:
    """Variables an INI hosts file sets for *owner*: ``host key=value`` lines and the
    ``[owner:vars]`` section."""
    found: dict[str, str] = {}
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith(("#", ";")):
            continue
        if text.startswith("[") and text.endswith("]"):
            section = text[1:-1].strip()
            continue
        if section == f"{owner}:vars":
            key, _, value = text.partition("=")
            found[key.strip()] = value.strip()
        elif not section.endswith((":vars", ":children")):
            try:
                words = shlex.split(text, comments=True)
            except ValueError:
                continue
            if words and words[0] == owner:
                for word in words[1:]:
                    key, equals, value = word.partition("=")
                    if equals:
                        found[key] = value
    return found


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []
