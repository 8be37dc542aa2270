"""Secrets are scrubbed by value, whatever their shape: from messages, log records, everything
the CLI prints, files it writes and Ansible module results."""

from __future__ import annotations

import base64
import io
import logging
import re
import secrets
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from coder_migrate import sensitive
from coder_migrate.cli import main
from coder_migrate.errors import ConfigError, redact
from coder_migrate.inventory import SecretRef, load_topology
from tests.helpers import copy_inventory, edit_yaml, load_collection_module


def test_a_short_token_is_scrubbed_once_registered() -> None:
    token = "k7Qz1"  # no shape rule would ever call this a credential
    assert redact(f"server said {token}") == f"server said {token}"
    sensitive.register(token)
    assert redact(f"server said {token}") == "server said (sensitive)"
    assert str(ConfigError(f"echoed {token} back")) == "echoed (sensitive) back"


def test_the_forms_a_secret_takes_in_output_are_scrubbed() -> None:
    secret = 'p@ss "word"/äö+1'
    sensitive.register(secret)
    encoded = base64.b64encode(secret.encode()).decode()
    json_form = 'p@ss \\"word\\"/\\u00e4\\u00f6+1'
    for shown in (secret, json_form, "p%40ss%20%22word%22%2F%C3%A4%C3%B6%2B1", encoded):
        assert sensitive.scrub(f"<{shown}>") == "<(sensitive)>", shown


def test_each_line_of_a_multi_line_secret_is_scrubbed() -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n" \
          "-----END PRIVATE KEY-----"
    sensitive.register(key)
    assert "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg" not in sensitive.scrub(
        "line: MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"
    )


def test_resolving_a_reference_registers_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CM_TEST_RESOLVED", "r3solved-value")
    assert SecretRef(env="CM_TEST_RESOLVED").resolve() == "r3solved-value"
    assert sensitive.scrub("r3solved-value") == "(sensitive)"


def test_a_secret_too_short_to_scrub_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CM_TEST_SHORT", "abc")
    with pytest.raises(Exception, match="fewer than 4 characters"):
        SecretRef(env="CM_TEST_SHORT").resolve()


def test_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    sensitive.register("l0gged-secret")
    logger = logging.getLogger("coder_migrate.test")
    with caplog.at_level(logging.INFO):
        logger.info("token %s", "l0gged-secret")
        try:
            raise RuntimeError("failed with l0gged-secret")
        except RuntimeError:
            logger.exception("boom")
    text = caplog.text
    assert "l0gged-secret" not in text
    assert "token (sensitive)" in text and "failed with (sensitive)" in text


def test_everything_the_cli_prints_is_scrubbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret that reached the CLI's output by any path (here a display name equal to a
    secret) is scrubbed from stdout; the inventory's own values are refused or masked before."""
    sensitive.register("Leaky Region 42")
    inventory = copy_inventory(tmp_path)
    edit_yaml(inventory / "host_vars" / "eu-west.yml",
              lambda data: data.update(coder_region_display_name="Leaky Region 42"))
    result = CliRunner().invoke(main, ["inventory", "show", "-i", str(inventory)])
    assert result.exit_code == 0, result.output
    assert "Leaky Region 42" not in result.stdout
    assert "(sensitive)" in result.stdout
    # The wrapper is gone after the command: the test's own streams are untouched.
    assert not isinstance(sys.stdout, sensitive._ScrubbingStream)


def test_the_scrubbing_stream_passes_everything_else_on() -> None:
    sensitive.register("str3am-secret")
    target = io.StringIO()
    stream = sensitive._ScrubbingStream(target)
    assert stream.write("a str3am-secret b\n") == len("a str3am-secret b\n")
    assert target.getvalue() == "a (sensitive) b\n"
    assert not stream.isatty()


def test_secret_values_in_coder_values_are_registered_when_loaded(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    edit_yaml(inventory / "host_vars" / "primary.yml", lambda data: data["coder_values"].update(
        oidc={"clientSecret": "typed-in-0idc-secret"}))
    load_topology(inventory)
    assert sensitive.scrub("typed-in-0idc-secret") == "(sensitive)"


def test_runbook_files_are_scrubbed(tmp_path: Path) -> None:
    inventory = copy_inventory(tmp_path)
    marker = "leaky-contact-7c3e"  # a contact that happens to equal a resolved secret
    edit_yaml(inventory / "group_vars" / "all" / "coder.yml",
              lambda data: data["coder_contacts"].update(team=marker))
    sensitive.register(marker)
    out = tmp_path / "runbook.md"
    result = CliRunner().invoke(main, ["runbook", "-i", str(inventory), "--region", "eu-west",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert marker not in text and "(sensitive)" in text


def test_ansible_results_mask_every_resolved_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    sensitive.register("ansibl3-result-secret")
    module = load_collection_module("coder_site", monkeypatch)

    class Module:
        def __init__(self) -> None:
            self.no_log_values: set[str] = set()

    from ansible_collections.coder_migrate.toolkit.plugins.module_utils.engine import (
        hide_resolved_secrets,
    )

    assert module is not None
    fake = Module()
    hide_resolved_secrets(fake)
    assert "ansibl3-result-secret" in fake.no_log_values

    from ansible.module_utils.common.parameters import remove_values

    result = remove_values({"msg": "failed: ansibl3-result-secret"}, fake.no_log_values)
    assert "ansibl3-result-secret" not in str(result)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.text(alphabet="ab/.(|", min_size=4, max_size=9), min_size=1, max_size=12),
       st.text(alphabet="ab/.(| ", max_size=200))
def test_the_trie_pattern_matches_what_a_plain_alternation_matches(
    values: set[str], text: str
) -> None:
    plain = re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))
    assert re.compile(sensitive.pattern_of(values)).sub("X", text) == plain.sub("X", text)


def test_a_long_secret_makes_a_pattern() -> None:
    pem_body = "A" * 3000
    assert re.compile(sensitive.pattern_of({pem_body})).sub("X", f"b{pem_body}c") == "bXc"


def test_secrets_registered_one_by_one_are_all_scrubbed_by_few_patterns() -> None:
    """A migration reads a key per region: registering each must not compile every
    secret's pattern again (it was most of a 50-region run's CPU in key reads), and every
    secret stays scrubbed, also where one contains another registered apart from it."""
    keys = [f"satellite-key-{secrets.token_hex(12)}" for _ in range(64)]
    for key in keys:
        sensitive.register(key)
    inner = keys[5][len("satellite-key-"):]
    outer = f"{secrets.token_hex(6)}{inner}{secrets.token_hex(6)}"
    sensitive.register(outer)  # contains a registered value, in a later group
    text = " and ".join([*keys, outer, f"x{keys[7]}{keys[8]}y"])

    shown = sensitive.scrub(text)

    assert not any(key in shown or key[-20:] in shown for key in [*keys, outer])
    assert shown.count(sensitive.SENSITIVE) == len(keys) + 3
    assert shown.startswith("(sensitive) and ") and shown.endswith(" and x(sensitive)(sensitive)y")
    assert len(sensitive._groups) <= len(sensitive._values).bit_length()
