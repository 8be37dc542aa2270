"""The migration runbook: goldens for inventories/example, commands the CLI accepts, no secrets.

Goldens live in tests/golden/. After an intended change to the planner, the guides or the
templates, regenerate them and review the diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_runbook.py
"""

from __future__ import annotations

import os
import re
import shlex
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import click
import pytest
from click.testing import CliRunner, Result

from coder_migrate.cli import main
from coder_migrate.cli.runbook import runbook
from coder_migrate.errors import ConfigError
from coder_migrate.inventory import load_topology
from coder_migrate.migrations.v1_20_to_v1_21.status import STEP_ORDER
from coder_migrate.runbook import assumed_plan, render_runbook
from tests.helpers import REPO, copy_inventory, edit_yaml

GOLDEN = REPO / "tests" / "golden"
EXAMPLE = "inventories/example"
"""Given relative to the repository, as a user would: the runbook shows it verbatim."""
REGIONS = ["us-east", "us-west", "eu-west", "ap-southeast", "australia-southeast1"]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def _run(*args: str) -> Result:
    return CliRunner().invoke(runbook, list(args), catch_exceptions=False)


def _compare_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), (
        f"the runbook differs from {path}; if intended, regenerate with UPDATE_GOLDEN=1 and "
        "review the diff"
    )


# -- goldens ----------------------------------------------------------------------------------


def test_markdown_runbook_of_the_example_matches_its_golden() -> None:
    result = _run("-i", EXAMPLE)
    assert result.exit_code == 0, result.output
    _compare_golden("runbook-example.md", result.output)


def test_html_runbook_of_one_region_matches_its_golden() -> None:
    result = _run("-i", EXAMPLE, "--region", "eu-west", "--format", "html")
    assert result.exit_code == 0, result.output
    _compare_golden("runbook-example-eu-west.html", result.output)


def test_the_runbook_is_deterministic_and_names_the_inventory_as_given() -> None:
    first = _run("-i", EXAMPLE).output
    assert first == _run("-i", EXAMPLE).output
    assert str(REPO) not in first
    assert "-i inventories/example " in first


def test_out_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "eu-west.md"
    result = _run("-i", EXAMPLE, "--region", "eu-west", "--out", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == _run("-i", EXAMPLE, "--region",
                                                       "eu-west").output


# -- content follows the planner ---------------------------------------------------------------


def test_regions_come_canary_first_then_inventory_order_then_shared_names() -> None:
    text = _run("-i", EXAMPLE).output
    headings = re.findall(r"^## \d+\. (\S+)", text, flags=re.MULTILINE)
    assert headings == [*REGIONS, "primary"]
    assert "## 1. us-east (US East), the canary" in text


def test_every_planned_change_appears_in_its_regions_section() -> None:
    topology = load_topology(Path(EXAMPLE))
    plan = assumed_plan(topology)
    text = _run("-i", EXAMPLE).output
    sections = re.split(r"^## \d+\. ", text, flags=re.MULTILINE)[1:]
    by_site = {s.split()[0]: s for s in sections}
    for change in plan.effective_changes:
        assert f"{change.action.value} {change.target}: {change.reason}" in by_site[
            change.region], change.id
    # and each region section lists its steps in the planner's order
    kinds = re.findall(r"^#### Step \d+: .*\(`(\w+)`\)$", by_site["eu-west"], re.MULTILINE)
    assert kinds == [k for k in STEP_ORDER if k in kinds] == list(STEP_ORDER)


def test_one_region_runbook_has_only_that_region() -> None:
    text = _run("-i", EXAMPLE, "--region", "eu-west").output
    assert re.findall(r"^## \d+\. (\S+)", text, flags=re.MULTILINE) == ["eu-west"]
    assert "coder-migrate migrate apply -i inventories/example --limit eu-west" in text
    assert "prod-us-east" not in text


def test_contacts_from_the_inventory_are_in_the_runbook() -> None:
    text = _run("-i", EXAMPLE, "--region", "ap-southeast").output
    assert "- team: platform@example.com" in text
    assert "- escalation: https://status.example.com" in text


def test_unknown_region_is_a_clear_error_with_exit_3() -> None:
    result = CliRunner().invoke(main, ["runbook", "-i", EXAMPLE, "--region", "mars"])
    assert result.exit_code == 3, result.output
    assert "--region mars: not a region of inventories/example" in result.output
    assert "regions: us-east, us-west, eu-west, ap-southeast, australia-southeast1" in (
        result.output)


def test_a_v2_inventory_is_refused(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    edit_yaml(inventory / "group_vars" / "all" / "coder.yml",
              lambda d: d.update(coder_generation="v2", coder_version="2.10.0"))
    for host in (inventory / "host_vars").glob("*.yml"):
        edit_yaml(host, lambda d: d.pop("coder_workspace_providers", None))
    with pytest.raises(ConfigError, match="runbook is for coder_generation v1"):
        render_runbook(load_topology(inventory), str(inventory))


# -- every command in the runbook exists in the CLI -------------------------------------------


def _parse(args: list[str]) -> list[str]:
    """Parse *args* against the real CLI without running anything; the command path."""
    command: click.Command = main
    ctx = command.make_context("coder-migrate", list(args))
    path = []
    while isinstance(command, click.Group):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        path.append(name)
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return path


def _commands(text: str) -> list[list[str]]:
    return [shlex.split(line)[1:] for line in text.splitlines()
            if line.startswith("coder-migrate ")]


def test_every_coder_migrate_command_in_the_runbook_parses_against_the_cli() -> None:
    text = _run("-i", EXAMPLE).output
    commands = _commands(text)
    seen = set()
    for args in commands:
        try:
            seen.add(" ".join(_parse(args)))
        except click.ClickException as error:
            pytest.fail(f"`coder-migrate {shlex.join(args)}` does not parse: {error}")
    assert seen == {"migrate plan", "migrate apply", "migrate status", "migrate rollback",
                    "status", "dns check"}


def test_the_command_check_refuses_what_the_cli_does_not_have() -> None:
    with pytest.raises(click.UsageError):
        _parse(["migrate", "teleport", "-i", EXAMPLE])
    with pytest.raises(click.UsageError):
        _parse(["migrate", "apply", "-i", EXAMPLE, "--no-such-flag"])


def test_the_runbook_command_is_registered() -> None:
    with click.Context(main) as ctx:
        assert "runbook" in main.list_commands(ctx)
        assert main.get_command(ctx, "runbook") is runbook


def test_every_command_module_loads_its_command() -> None:
    """The lazy command table names a module and a command that exist, for every command."""
    with click.Context(main) as ctx:
        for name in main.list_commands(ctx):
            command = main.get_command(ctx, name)
            assert isinstance(command, click.Command) and command.name == name


# -- secrets and html -------------------------------------------------------------------------


def test_no_secret_value_appears(monkeypatch: pytest.MonkeyPatch) -> None:
    token, api_key = "tok-3f9a1c-runbook-canary", "pdns-8c2e44-runbook-canary"
    monkeypatch.setenv("CODER_SESSION_TOKEN", token)
    monkeypatch.setenv("PDNS_API_KEY", api_key)
    topology = load_topology(Path(EXAMPLE))
    for region in (None, "eu-west"):
        for fmt in ("md", "html"):
            text = render_runbook(topology, EXAMPLE, region=region, fmt=fmt)
            assert token not in text and api_key not in text
            assert "env CODER_SESSION_TOKEN" in text and "env PDNS_API_KEY" in text


class _Checker(HTMLParser):
    """Fails on a closing tag that does not match the open one."""

    VOID: ClassVar[frozenset[str]] = frozenset({"meta", "br", "hr", "img", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links += [v or "" for k, v in attrs if k == "href"]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _check_html(text: str) -> _Checker:
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.stack == [], f"unclosed: {checker.stack}"
    return checker


def test_html_is_well_formed_and_escapes_inventory_text(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    hostile = "<script>alert('x')</script> & co"
    edit_yaml(inventory / "group_vars" / "all" / "coder.yml",
              lambda d: d["coder_contacts"].update(team=hostile,
                                                   runbooks="javascript:alert(1)"))
    edit_yaml(inventory / "host_vars" / "eu-west.yml",
              lambda d: d.update(coder_region_display_name="EU <West> & \"Dublin\""))
    topology = load_topology(inventory)
    text = render_runbook(topology, str(inventory), fmt="html")
    checker = _check_html(text)
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in text
    assert "EU &lt;West&gt; &amp; &#34;Dublin&#34;" in text
    assert hostile in "".join(checker.text)  # the reader sees the text as written
    assert checker.links == ["https://status.example.com"]  # only http(s) become links


def test_html_runbook_of_every_region_is_well_formed() -> None:
    topology = load_topology(Path(EXAMPLE))
    for region in [None, *REGIONS]:
        _check_html(render_runbook(topology, EXAMPLE, region=region, fmt="html"))
