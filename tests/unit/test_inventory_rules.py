"""One broken inventory per rule: each gives one line naming the file and the key, exit 3.

The inventories are real directories read through ``ansible-inventory --list``, exactly as
users run ``coder-migrate inventory validate``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from coder_migrate.cli import main
from coder_migrate.errors import InventoryError
from coder_migrate.inventory import load_topology
from tests.helpers import copy_inventory, edit_yaml

ALL = "group_vars/all/coder.yml"
REGIONS = "group_vars/coder_regions/region.yml"
LITERAL_TOKEN = "f3a1c0de-5eed-4bad-8c0d-0123456789ab:" + "9" * 64


def _set(path: str, key: str, value: Any) -> Callable[[Path], None]:
    def change(inventory: Path) -> None:
        def apply(data: dict[str, Any]) -> None:
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if isinstance(node, list):
                node[int(parts[-1])] = value
            else:
                node[parts[-1]] = value

        edit_yaml(inventory / path, apply)

    return change


def _delete(path: str, key: str) -> Callable[[Path], None]:
    def change(inventory: Path) -> None:
        edit_yaml(inventory / path, lambda data: data.pop(key))

    return change


@dataclass(frozen=True)
class Case:
    id: str
    change: Callable[[Path], None]
    file: str
    owner: str
    key: str
    expected: str


def _write(path: str, text: str) -> Callable[[Path], None]:
    def change(inventory: Path) -> None:
        (inventory / path).write_text(text, encoding="utf-8")

    return change


def _both(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    def change(inventory: Path) -> None:
        for step in changes:
            step(inventory)

    return change


CASES = [
    Case("literal-token", _set(ALL, "coder_session_token", LITERAL_TOKEN), ALL, "all",
         "coder_session_token", "secret reference"),
    Case("secret-env-and-file",
         _set(ALL, "coder_session_token", {"env": "CODER_SESSION_TOKEN", "file": "/tmp/t"}),
         ALL, "all", "coder_session_token", "exactly one of env, file"),
    Case("literal-dns-key", _set(ALL, "coder_dns.powerdns.api_key", "supersecretapikey"), ALL,
         "all", "coder_dns.powerdns.api_key", "secret reference"),
    Case("generation", _set(ALL, "coder_generation", "v3"), ALL, "all", "coder_generation",
         "'v1' or 'v2'"),
    Case("version", _set(ALL, "coder_version", "latest"), ALL, "all", "coder_version",
         "pattern"),
    Case("url-with-path", _set("host_vars/us-west.yml", "coder_access_url",
                               "https://coder-us-west.example.com/coder"),
         "host_vars/us-west.yml", "us-west", "coder_access_url", "without a path"),
    Case("url-scheme", _set("host_vars/us-west.yml", "coder_access_url",
                            "ftp://coder-us-west.example.com"),
         "host_vars/us-west.yml", "us-west", "coder_access_url", "absolute http(s) URL"),
    Case("url-relative", _set("host_vars/primary.yml", "coder_access_url", "coder.example.com"),
         "host_vars/primary.yml", "primary", "coder_access_url", "absolute http(s) URL"),
    Case("wildcard-shape", _set("host_vars/eu-west.yml", "coder_wildcard_host",
                                "coder-eu-west.example.com"),
         "host_vars/eu-west.yml", "eu-west", "coder_wildcard_host", "'*.<domain>'"),
    Case("wildcard-outside-zone", _set("host_vars/eu-west.yml", "coder_wildcard_host",
                                       "*.coder-eu-west.example.net"),
         "host_vars/eu-west.yml", "eu-west", "coder_wildcard_host", "under example.com"),
    Case("host-outside-zone", _set("host_vars/eu-west.yml", "coder_access_url",
                                   "https://coder-eu-west.example.net"),
         "host_vars/eu-west.yml", "eu-west", "coder_access_url", "under the zone example.com"),
    Case("duplicate-host", _set("host_vars/us-west.yml", "coder_access_url",
                                "https://coder-us-east.example.com"),
         "host_vars/us-west.yml", "us-west", "coder_access_url", "us-east uses it"),
    Case("duplicate-wildcard", _set("host_vars/us-west.yml", "coder_wildcard_host",
                                    "*.coder-us-east.example.com"),
         "host_vars/us-west.yml", "us-west", "coder_wildcard_host", "us-east uses it"),
    Case("duplicate-display-name", _set("host_vars/us-west.yml", "coder_region_display_name",
                                        "us east"),
         "host_vars/us-west.yml", "us-west", "coder_region_display_name", "us-east uses it"),
    Case("namespace-equals-provider",
         _set("host_vars/ap-southeast.yml", "coder_workspace_providers.0.namespace",
              "coder-satellite"),
         "host_vars/ap-southeast.yml", "ap-southeast", "coder_workspace_providers[0].namespace",
         "separate namespace"),
    Case("overlapping-subnets", _set("host_vars/us-west.yml", "coder_geo.subnets",
                                     ["198.51.100.32/27", "198.51.100.64/26"]),
         "host_vars/us-west.yml", "us-west", "coder_geo.subnets", "us-east has 198.51.100.0/26"),
    Case("test-subnet-outside", _set("host_vars/eu-west.yml", "coder_geo.test_subnets",
                                     ["192.0.2.0/28"]),
         "host_vars/eu-west.yml", "eu-west", "coder_geo.test_subnets", "inside the region's own"),
    Case("subnet-syntax", _set("host_vars/eu-west.yml", "coder_geo.subnets", ["203.0.113.1/26"]),
         "host_vars/eu-west.yml", "eu-west", "coder_geo.subnets[0]", "CIDR"),
    Case("country", _set("host_vars/eu-west.yml", "coder_geo.countries", ["Germany"]),
         "host_vars/eu-west.yml", "eu-west", "coder_geo.countries[0]", "alpha-2"),
    Case("continent", _set("host_vars/eu-west.yml", "coder_geo.continents", ["EUR"]),
         "host_vars/eu-west.yml", "eu-west", "coder_geo.continents[0]", "'EU'"),
    Case("unknown-key", _set("host_vars/eu-west.yml", "coder_namespce", "x"),
         "host_vars/eu-west.yml", "eu-west", "coder_namespce", "did you mean coder_namespace"),
    Case("region-key-on-primary", _set("host_vars/primary.yml", "coder_canary", True),
         "host_vars/primary.yml", "primary", "coder_canary", "regions only"),
    Case("two-canaries", _set("host_vars/eu-west.yml", "coder_canary", True),
         "host_vars/eu-west.yml", "eu-west", "coder_canary", "at most one canary"),
    Case("dns-provider-settings", _set(ALL, "coder_dns.provider", "rfc2136"), ALL, "all",
         "coder_dns", "settings under rfc2136"),
    Case("shared-hostname-outside-zone", _set(ALL, "coder_dns.shared_hostname",
                                              "coder.example.org"),
         ALL, "all", "coder_dns.shared_hostname", "under the zone example.com"),
    Case("ttl", _set(ALL, "coder_dns.ttl", 0), ALL, "all", "coder_dns.ttl", "greater than"),
    Case("dns-target", _set("host_vars/us-east.yml", "coder_dns_targets", ["198.51.100.300"]),
         "host_vars/us-east.yml", "us-east", "coder_dns_targets[0]", "IPv4 or IPv6"),
    Case("namespace-name", _set(REGIONS, "coder_namespace", "Coder_Satellite"), REGIONS,
         "coder_regions", "coder_namespace", "Kubernetes name"),
    Case("missing-kube-context", _delete("host_vars/us-east.yml", "coder_kube_context"),
         "hosts.yml", "us-east", "coder_kube_context", "required"),
    Case("global-differs", _set("host_vars/eu-west.yml", "coder_generation", "v2"),
         "host_vars/eu-west.yml", "eu-west", "coder_generation", "same value on every host"),
    Case("template", _set("host_vars/us-east.yml", "coder_kube_context", "{{ lookup('env','X') }}"),
         "host_vars/us-east.yml", "us-east", "coder_kube_context", "without templating"),
    Case("v2-with-providers", _both(
        _set(ALL, "coder_generation", "v2"),
        _set(ALL, "coder_chart", {"repo": "https://helm.coder.com/v2", "name": "coder",
                                  "version": "2.24.0"}),
        _set(ALL, "coder_version", "2.24.0"),
        *(_delete(f"host_vars/{r}.yml", "coder_workspace_providers")
          for r in ("us-west", "eu-west", "ap-southeast", "australia-southeast1")),
    ), "host_vars/us-east.yml", "us-east", "coder_workspace_providers", "only in Coder v1"),
    Case("no-primary", _write("hosts.yml", "all:\n  children:\n    coder_regions:\n      hosts:\n"
                                           "        us-east:\n"),
         "hosts.yml", "coder_primary", "hosts", "exactly one host"),
    Case("yaml-syntax", _write("host_vars/eu-west.yml", "coder_namespace: [unclosed\n"),
         "host_vars/eu-west.yml:2", "-", "-", "valid YAML"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_rule_gives_one_line_naming_file_and_key(case: Case, tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    case.change(inventory)
    before = {p: p.read_bytes() for p in inventory.rglob("*") if p.is_file()}

    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])

    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    # Paths are relative to the inventory (it is not under the current directory here).
    assert line.startswith(f"error: {case.file}: {case.owner}: {case.key}: expected"), line
    assert case.expected in line
    assert LITERAL_TOKEN not in result.output + result.stderr
    assert "supersecretapikey" not in result.stderr
    # Validation changes nothing.
    assert before == {p: p.read_bytes() for p in inventory.rglob("*") if p.is_file()}


def test_problems_are_all_listed_at_once(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    for change in (CASES[5].change, CASES[18].change, CASES[20].change):
        change(inventory)
    with pytest.raises(InventoryError) as caught:
        load_topology(inventory)
    keys = sorted(problem.key for problem in caught.value.problems)
    assert keys == ["coder_access_url", "coder_geo.countries[0]", "coder_namespce"]


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    with (inventory / "host_vars" / "eu-west.yml").open("a") as handle:
        handle.write("coder_namespace: other\ncoder_namespace: again\n")
    with pytest.raises(InventoryError) as caught:
        load_topology(inventory)
    assert str(caught.value).endswith("expected each key once, found 'coder_namespace' twice")
