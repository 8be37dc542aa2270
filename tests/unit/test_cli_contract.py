"""What every command promises: help with an example, one line and exit 1 for an unexpected
error (the traceback only under --debug), user values never read as rich markup, and the exit
codes README.md lists."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from coder_migrate.cli import COMMANDS, EXIT_CODES, main
from coder_migrate.cli import inventory as inventory_cli
from tests.helpers import REPO, copy_inventory, edit_yaml


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, name
        if command.hidden:
            continue
        found.append((*path, name))
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*path, name)))
    return found


ALL_COMMANDS = _commands(main)


def test_every_command_module_is_walked() -> None:
    assert {path[0] for path in ALL_COMMANDS} == set(COMMANDS)
    assert ("inventory", "argument-spec") in ALL_COMMANDS
    assert ("inventory", "reference") in ALL_COMMANDS


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=[" ".join(p) for p in ALL_COMMANDS])
def test_every_command_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    examples = result.output.split("Examples:\n", 1)
    assert len(examples) == 2, f"coder-migrate {' '.join(path)} --help has no Examples:"
    first = examples[1].splitlines()[0].strip()
    assert first.startswith(("coder-migrate ", "CODER_", "eval ")), first


def test_top_level_help_names_the_docs_and_every_exit_code() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "docs/inventory.md" in result.output
    for code, meaning in EXIT_CODES.items():
        assert f"  {code}  {meaning}" in result.output


def test_readme_lists_every_exit_code() -> None:
    readme = (REPO / "README.md").read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"| {code} | {meaning} |" in readme


def test_an_unexpected_error_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(directory: Path) -> None:
        raise KeyError("primary [/] leaked\nsecond line")

    monkeypatch.setattr(inventory_cli, "load_topology", broken)
    result = CliRunner().invoke(main, ["inventory", "validate", "-i", str(REPO / "inventories"
                                                                             / "example")])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: unexpected KeyError: 'primary [/] leaked\\nsecond line' (run again with "
        "--debug for the traceback, and report it)"
    ]
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(directory: Path) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(inventory_cli, "load_topology", broken)
    example = str(REPO / "inventories" / "example")
    result = CliRunner().invoke(main, ["--debug", "inventory", "validate", "-i", example])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith("RuntimeError: a bug")


def test_values_with_markup_are_printed_as_they_are(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    edit_yaml(inventory / "host_vars" / "eu-west.yml", lambda data: data.update(
        coder_region_display_name="EU [/] West [bold]",
        coder_access_url="http://[fd00:ac::11]:8080",
        coder_hostname="coder-eu-west.example.com",
    ))
    shown = CliRunner().invoke(main, ["inventory", "show", "-i", str(inventory)])
    assert shown.exit_code == 0, shown.output
    assert "EU [/] West [bold]" in shown.stdout
    assert "http://[fd00:ac::11]:8080" in shown.stdout

    edit_yaml(inventory / "host_vars" / "eu-west.yml",
              lambda data: data.update(coder_namespace="[/]bad"))
    refused = CliRunner().invoke(main, ["inventory", "validate", "-i", str(inventory)])
    assert refused.exit_code == 3
    assert refused.stderr.splitlines() == [
        "error: host_vars/eu-west.yml: eu-west: coder_namespace: expected a Kubernetes name "
        "(lowercase letters, digits and '-', at most 63), found '[/]bad'"
    ]


def test_inventory_show_masks_sensitive_values_like_plan(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    pasted = "pasted-db-password-81c2"
    edit_yaml(inventory / "host_vars" / "primary.yml", lambda data: data["coder_values"].update(
        postgres={"password": pasted, "passwordSecretName": "coder-db"},
        env=[{"name": "CODER_OIDC_CLIENT_SECRET", "value": "oidc-secret-7d1e"}],
    ))
    for output in ("json", "text"):
        result = CliRunner().invoke(main, ["inventory", "show", "-i", str(inventory),
                                           "--output", output])
        assert result.exit_code == 0, result.output
        assert pasted not in result.output and "oidc-secret-7d1e" not in result.output
    as_json = CliRunner().invoke(main, ["inventory", "show", "-i", str(inventory),
                                        "--output", "json"])
    values = json.loads(as_json.stdout)["primary"]["values"]
    assert values["postgres"] == {"password": "(sensitive)", "passwordSecretName": "coder-db"}
    assert values["env"] == [{"name": "CODER_OIDC_CLIENT_SECRET", "value": "(sensitive)"}]
