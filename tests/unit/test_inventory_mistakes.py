"""The mistakes a new user makes writing their own inventory, one at a time: each is refused by
``coder-migrate inventory validate`` with exit 3 and exactly this first line, and nothing in
the inventory changes (contents or modes). ``tests/integration/test_validate_play.py`` runs
the same inventories through the first play of ``site.yml``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from coder_migrate.cli import main
from tests.helpers import copy_inventory, edit_yaml

ALL = "group_vars/all/coder.yml"
# An API key pasted where the variable's name goes; it must never be printed.
PASTED_KEY = "Xk9fQ2mZ7rT4vB1nL8sD3hJ6wP0yC5gA"
PASTED_UPPER_KEY = "AKIA2E0A8F3B244C9986"


def _vars(path: str, **changes: Any) -> Callable[[Path], None]:
    def change(inventory: Path) -> None:
        edit_yaml(inventory / path, lambda data: data.update(changes))

    return change


def _hosts(text: str) -> Callable[[Path], None]:
    def change(inventory: Path) -> None:
        (inventory / "hosts.yml").write_text(text, encoding="utf-8")

    return change


def _rename_region(old: str, new: str) -> Callable[[Path], None]:
    def change(inventory: Path) -> None:
        hosts = inventory / "hosts.yml"
        hosts.write_text(hosts.read_text().replace(f"        {old}:", f"        {new}:"))
        (inventory / "host_vars" / f"{old}.yml").rename(inventory / "host_vars" / f"{new}.yml")

    return change


def _token_file(mode: int, where: str = "../coder-token") -> Callable[[Path], None]:
    """A token file *where* (relative to the inventory directory) with *mode*."""

    def change(inventory: Path) -> None:
        token = inventory / where
        token.write_text("a-session-token-value\n")
        token.chmod(mode)
        _vars(ALL, coder_session_token={"file": where})(inventory)

    return change


def _dns_key(reference: dict[str, str]) -> Callable[[Path], None]:
    def change(inventory: Path) -> None:
        def update(data: dict[str, Any]) -> None:
            data["coder_dns"]["powerdns"]["api_key"] = reference

        edit_yaml(inventory / ALL, update)

    return change


REGIONS_WITHOUT = """all:
  children:
    coder_primary:
      hosts:
        primary:
"""

MISSPELT_GROUP = REGIONS_WITHOUT + """    coder_region:
      hosts:
        us-east:
        eu-west:
"""


@dataclass(frozen=True)
class Mistake:
    id: str
    change: Callable[[Path], None]
    first_line: str
    hidden: tuple[str, ...] = field(default=())


MISTAKES = [
    Mistake(
        "underscore-in-access-url",
        _vars("host_vars/eu-west.yml", coder_access_url="https://coder_eu-west.example.com"),
        "host_vars/eu-west.yml: eu-west: coder_access_url: expected a URL whose host is an IP "
        "address or a DNS name of ASCII letters, digits, '-' and '.' (an internationalised "
        "name in its xn-- form), found 'https://coder_eu-west.example.com'",
    ),
    Mistake(
        "non-ascii-in-access-url",
        _vars("host_vars/eu-west.yml", coder_access_url="https://cöder-eu-west.example.com"),
        "host_vars/eu-west.yml: eu-west: coder_access_url: expected a URL whose host is an IP "
        "address or a DNS name of ASCII letters, digits, '-' and '.' (an internationalised "
        "name in its xn-- form), found 'https://cöder-eu-west.example.com'",
    ),
    Mistake(
        "same-dns-name-other-port",
        _vars("host_vars/us-west.yml",
              coder_access_url="https://coder-eu-west.example.com:8443",
              coder_wildcard_host="*.coder-eu-west-8443.example.com"),
        "host_vars/eu-west.yml: eu-west: coder_access_url: expected a DNS name no other site "
        "uses (us-west uses coder-eu-west.example.com; a different port does not make a "
        "different site in DNS), found https://coder-eu-west.example.com",
    ),
    Mistake(
        "same-context-namespace-release",
        _vars("host_vars/us-west.yml", coder_kube_context="prod-eu-west"),
        "host_vars/eu-west.yml: eu-west: coder_kube_context: expected a Helm release no other "
        "site uses (us-west is release coder-satellite in namespace coder-satellite of kube "
        "context prod-eu-west too), found prod-eu-west",
    ),
    Mistake(
        "satellite-in-another-regions-workspace-namespace",
        _vars("host_vars/us-west.yml", coder_kube_context="prod-eu-west",
              coder_namespace="coder-workspaces",
              coder_workspace_providers=[{"name": "us-west", "namespace": "coder-ws-us-west"}]),
        "host_vars/us-west.yml: us-west: coder_namespace: expected a namespace other than that "
        "of workspace provider eu-west of region eu-west in the same cluster (prod-eu-west); "
        "Coder requires the satellite in a separate namespace, found coder-workspaces",
    ),
    Mistake(
        "version-1.19",
        _vars(ALL, coder_version="1.19.0"),
        "group_vars/all/coder.yml: all: coder_version: expected a Coder 1.21.x version for "
        "coder_generation v1 (the satellite migration needs 1.21; 1.20 and older have no "
        "satellites), found '1.19.0'",
    ),
    Mistake(
        "version-1.20",
        _vars(ALL, coder_version="1.20.4"),
        "group_vars/all/coder.yml: all: coder_version: expected a Coder 1.21.x version for "
        "coder_generation v1 (the satellite migration needs 1.21; 1.20 and older have no "
        "satellites), found '1.20.4'",
    ),
    Mistake(
        "region-named-like-a-title",
        _rename_region("eu-west", "EU_West"),
        "hosts.yml: EU_West: inventory_hostname: expected a host name of lowercase letters, "
        "digits and '-' (at most 63; it names the site in Coder, in change ids and in "
        "--limit), found 'EU_West'",
    ),
    Mistake(
        "misspelt-regions-group",
        _hosts(MISSPELT_GROUP),
        "hosts.yml: coder_region: group: expected one of coder_primary, coder_regions, "
        "coder_proxy_hosts (or a child group of one); did you mean coder_regions?, found "
        "coder_region, whose hosts coder-migrate would ignore (us-east, eu-west)",
    ),
    Mistake(
        "no-regions",
        _hosts(REGIONS_WITHOUT),
        "hosts.yml: coder_regions: hosts: expected at least one host in group coder_regions "
        "(one per region), found none",
    ),
    Mistake(
        "no-primary",
        _hosts("all:\n  children:\n    coder_regions:\n      hosts:\n        us-east:\n"),
        "hosts.yml: coder_primary: hosts: expected exactly one host in group coder_primary, "
        "found 0 (none)",
    ),
    Mistake(
        "empty-inventory",
        _hosts("all:\n"),
        "hosts.yml: coder_primary: hosts: expected exactly one host in group coder_primary, "
        "found 0 (none)",
    ),
    Mistake(
        "token-file-readable-by-everyone",
        _token_file(0o644),
        "group_vars/all/coder.yml: all: coder_session_token.file: expected a secret file "
        "other users cannot read or write (chmod 600 ../coder-token), found mode 0644",
        hidden=("a-session-token-value",),
    ),
    Mistake(
        "token-file-inside-the-inventory",
        _token_file(0o600, "coder-token"),
        "group_vars/all/coder.yml: all: coder_session_token.file: expected a secret file "
        "outside the inventory directory (Ansible reads the files in it as inventory, and "
        "would print the secret as a host name), found coder-token",
        hidden=("a-session-token-value",),
    ),
    Mistake(
        "api-key-pasted-as-env-name",
        _dns_key({"env": PASTED_KEY}),
        "group_vars/all/coder.yml: all: coder_dns.powerdns.api_key.env: expected the name of "
        "an environment variable (upper-case letters, digits and '_'), found something else "
        "(not shown: it may be the secret itself)",
        hidden=(PASTED_KEY,),
    ),
    Mistake(
        "upper-case-api-key-pasted-as-env-name",
        _dns_key({"env": PASTED_UPPER_KEY}),
        "group_vars/all/coder.yml: all: coder_dns.powerdns.api_key.env: expected the name of "
        "an environment variable, found a value that looks like the secret itself (not shown)",
        hidden=(PASTED_UPPER_KEY,),
    ),
]


def snapshot(inventory: Path) -> dict[Path, tuple[bytes, int]]:
    """Every file of the inventory (and beside it) with its contents and mode."""
    return {
        path: (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        for path in sorted(inventory.parent.rglob("*")) if path.is_file()
    }


def broken_inventory(tmp_path: Path, mistake: Mistake) -> Path:
    inventory = copy_inventory(tmp_path)
    mistake.change(inventory)
    return inventory


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.id for m in MISTAKES])
def test_each_mistake_is_refused_with_its_line_and_changes_nothing(
    mistake: Mistake, tmp_path: Path
) -> None:
    inventory = broken_inventory(tmp_path, mistake)
    before = snapshot(inventory)

    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])

    assert result.exit_code == 3, result.output
    assert result.stderr.splitlines()[0] == f"error: {mistake.first_line}"
    assert result.stdout == ""
    for secret in mistake.hidden:
        assert secret not in result.output
    assert snapshot(inventory) == before


def test_a_private_token_file_and_an_upper_case_env_name_pass(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    _token_file(0o600)(inventory)
    _dns_key({"env": "PDNS_API_KEY_2"})(inventory)
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])
    assert result.exit_code == 0, result.output
    assert "valid (v1 1.21.0, primary primary and 5 region(s))" in result.stdout


def test_a_region_on_another_port_of_an_ip_address_is_its_own_site(tmp_path: Path) -> None:
    """The lab's shape: one loopback address per site, or one address and two ports, each
    site with a DNS name of its own."""
    inventory = copy_inventory(tmp_path)
    _vars("host_vars/us-west.yml", coder_access_url="http://127.0.0.1:17082",
          coder_hostname="coder-us-west.example.com")(inventory)
    _vars("host_vars/eu-west.yml", coder_access_url="http://127.0.0.1:17083",
          coder_hostname="coder-eu-west.example.com")(inventory)
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])
    assert result.exit_code == 0, result.output


def test_child_groups_of_the_regions_group_are_regions(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    hosts = inventory / "hosts.yml"
    hosts.write_text(hosts.read_text().replace(
        "    coder_regions:\n      hosts:\n        us-east:\n",
        "    coder_regions:\n      children:\n        coder_regions_americas:\n"
        "          hosts:\n            us-east:\n      hosts:\n",
    ))
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])
    assert result.exit_code == 0, result.output
    assert "5 region(s)" in result.stdout


def test_a_host_outside_the_groups_that_sets_an_access_url_is_refused(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    hosts = inventory / "hosts.yml"
    hosts.write_text(hosts.read_text() + "    regions:\n      hosts:\n        eu-north:\n")
    (inventory / "host_vars" / "eu-north.yml").write_text(
        "coder_access_url: https://coder-eu-north.example.com\n"
    )
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])
    assert result.exit_code == 3
    assert result.stderr.splitlines()[0] == (
        "error: hosts.yml: eu-north: group_names: expected a host in "
        "coder_primary or coder_regions (it sets coder_access_url, and coder-migrate reads "
        "only the hosts of these groups), found a host in neither"
    )


def test_paths_are_relative_to_the_current_directory_when_the_inventory_is_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = broken_inventory(tmp_path, MISTAKES[5])
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", "example"])
    assert result.exit_code == 3
    assert result.stderr.startswith(
        "error: example/group_vars/all/coder.yml: all: coder_version: expected"
    )
    assert str(inventory) not in result.stderr
    assert os.sep + "tmp" not in result.stderr
